//! The users clients log in as, as one snapshot a reload replaces whole (see [`crate::reload`]).
//!
//! Every user is an *account* with a stable id, given by name the first time this process sees
//! the name and never reused: pools are keyed by (backend id, account id) and connection counts
//! per user live in the account, so a user added, removed or moved in the file never makes one
//! user's pool, limit or KILL permissions another's. A removed user's account stays (marked not
//! current): nobody can log in as it any more, while the sessions already logged in keep running
//! on its pools until they end (a reload never drops a client; end them with the console's
//! `KILL CLIENTS WHERE USER = 'name'` if that is what you want). A user added again under the
//! same name gets its old id back, with its pools.
//!
//! The alternative turned down: positions in the file's list, as before. Cheap, but a user
//! removed from the middle shifts every later user onto another's pools and counters.

use crate::auth::Credential;
use crate::config::{Config, PoolMode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The account the users loaded from the database (`[auth_from_backend]`) share: a name no
/// client can log in with (configured names are never empty).
pub const DB_ACCOUNT: &str = "";

/// Ids of users loaded from the database start here (after every possible account id): a
/// user's id decides KILL permissions, so the two ranges must never meet.
pub const DB_USER_IDS_FROM: u32 = 1 << 24;

/// What sluice knows of one user (its account's current settings).
#[derive(Debug, Clone, PartialEq)]
pub struct UserSpec {
    /// The account's stable id (see the module docs).
    pub id: u32,
    pub name: String,
    pub credential: Credential,
    pub backend_user: String,
    pub backend_password: String,
    pub pool_mode: PoolMode,
    pub max_connections: usize,
    pub require_tls: bool,
    /// Where this user's reads go, and what they must have seen (`[routing]`, or the user's own).
    pub reads: crate::config::Reads,
    pub consistency: crate::config::Consistency,
}

/// An account: its latest settings, whether the configuration still lists it, and the clients
/// logged in as it in this process (carried from one snapshot to the next).
#[derive(Debug)]
pub struct Account {
    pub spec: UserSpec,
    pub current: bool,
    clients: Arc<AtomicUsize>,
}

impl Account {
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// Every account this process has known, by id.
#[derive(Debug, Default)]
pub struct Users {
    pub all: Vec<Arc<Account>>,
    /// The database users' pool account, when `[auth_from_backend]` is set.
    pub db_account: Option<u32>,
}

impl Users {
    /// The accounts of `cfg` (validated already); `prev`: the snapshot running now, whose ids
    /// and connection counts carry over by name.
    pub fn build(cfg: &Config, prev: Option<&Users>) -> Result<Users, String> {
        let mut specs: Vec<UserSpec> = Vec::with_capacity(cfg.users.len() + 1);
        for u in &cfg.users {
            specs.push(UserSpec {
                id: 0,
                name: u.name.clone(),
                credential: Credential::parse(&u.password, u.auth_plugin.as_deref())
                    .map_err(|e| format!("users.{}: {e}", u.name))?,
                backend_user: u.backend_user.clone(),
                backend_password: u.backend_password.clone(),
                pool_mode: u.pool_mode.unwrap_or(cfg.pool.mode),
                max_connections: u.max_connections,
                require_tls: u.require_tls,
                reads: u.reads.unwrap_or(cfg.routing.reads),
                consistency: u.consistency.unwrap_or(cfg.routing.consistency),
            });
        }
        if let Some(a) = &cfg.auth_from_backend {
            specs.push(UserSpec {
                id: 0,
                name: DB_ACCOUNT.to_string(),
                credential: Credential::parse("*0000000000000000000000000000000000000000", None)?,
                backend_user: a.backend_user.clone(),
                backend_password: a.backend_password.clone(),
                pool_mode: a.pool_mode.unwrap_or(cfg.pool.mode),
                max_connections: 0,
                require_tls: false,
                reads: cfg.routing.reads,
                consistency: cfg.routing.consistency,
            });
        }
        // Every known account, not current until the new list names it again.
        let mut all: Vec<Account> = prev
            .map(|p| {
                p.all
                    .iter()
                    .map(|a| Account {
                        spec: a.spec.clone(),
                        current: false,
                        clients: a.clients.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut db_account = None;
        for mut s in specs {
            let id = match all.iter().position(|a| a.spec.name == s.name) {
                Some(i) => i,
                None => {
                    if all.len() >= DB_USER_IDS_FROM as usize {
                        return Err("too many user names in this process's life".into());
                    }
                    all.push(Account {
                        spec: s.clone(),
                        current: false,
                        clients: Arc::new(AtomicUsize::new(0)),
                    });
                    all.len() - 1
                }
            };
            s.id = id as u32;
            if s.name == DB_ACCOUNT {
                db_account = Some(id as u32);
            }
            all[id].spec = s;
            all[id].current = true;
        }
        Ok(Users {
            all: all.into_iter().map(Arc::new).collect(),
            db_account,
        })
    }

    pub fn get(&self, id: u32) -> Option<&Arc<Account>> {
        self.all.get(id as usize)
    }

    /// The users a client may log in as now.
    pub fn logins(&self) -> impl Iterator<Item = &UserSpec> {
        self.all
            .iter()
            .filter(|a| a.current && a.spec.name != DB_ACCOUNT)
            .map(|a| &a.spec)
    }

    /// The first account listed now (what the health probe logs in as when `[health]` names
    /// no user of its own).
    pub fn first_current(&self) -> u32 {
        self.all
            .iter()
            .find(|a| a.current && a.spec.name != DB_ACCOUNT)
            .or_else(|| self.all.iter().find(|a| a.current))
            .map_or(0, |a| a.spec.id)
    }

    /// Accounts listed now (pool accounts included).
    pub fn current_count(&self) -> usize {
        self.all.iter().filter(|a| a.current).count()
    }

    /// Counts a login of account `id`; at the user's limit nothing is counted and the limit is
    /// returned as the error. The limit is the current one (a reload may have changed it; those
    /// already logged in stay).
    pub fn admit(&self, id: u32) -> Result<(), usize> {
        let Some(a) = self.get(id) else {
            return Ok(());
        };
        let limit = a.spec.max_connections;
        if limit == 0 {
            a.clients.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        a.clients
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c < limit).then_some(c + 1)
            })
            .map(drop)
            .map_err(|_| limit)
    }

    pub fn leave(&self, id: u32) {
        if let Some(a) = self.get(id) {
            let _ = a
                .clients
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        }
    }
}

/// How the users of two snapshots differ, by name (for the reload's report and its tests).
#[derive(Debug, Default, PartialEq)]
pub struct UsersDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The password (or its hash, or the plugin) changed: new logins check the new one.
    pub credentials: Vec<String>,
    /// `backend_user` / `backend_password` changed: the user's pooled connections are retired.
    pub backend_account: Vec<String>,
    /// Limits and routing options changed (new logins take them).
    pub options: Vec<String>,
}

impl UsersDiff {
    /// One line per change, as the reload reports it.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut line = |what: &str, names: &[String]| {
            if !names.is_empty() {
                out.push(format!("users {what}: {}", names.join(" ")));
            }
        };
        line("added", &self.added);
        line("removed", &self.removed);
        line("password changed", &self.credentials);
        line("backend account changed", &self.backend_account);
        line("options changed", &self.options);
        out
    }
}

/// What changed between the users running (`old`) and the reloaded ones (`new`).
pub fn diff(old: &Users, new: &Users) -> UsersDiff {
    let mut d = UsersDiff::default();
    let shown = |s: &UserSpec| {
        if s.name == DB_ACCOUNT {
            "[auth_from_backend]".to_string()
        } else {
            s.name.clone()
        }
    };
    for n in new.all.iter().filter(|a| a.current) {
        let s = &n.spec;
        match old.get(s.id).filter(|o| o.current) {
            None => d.added.push(shown(s)),
            Some(o) => {
                let o = &o.spec;
                if o.credential != s.credential {
                    d.credentials.push(shown(s));
                }
                if (&o.backend_user, &o.backend_password) != (&s.backend_user, &s.backend_password)
                {
                    d.backend_account.push(shown(s));
                }
                let opts = |u: &UserSpec| {
                    (
                        u.pool_mode,
                        u.max_connections,
                        u.require_tls,
                        u.reads,
                        u.consistency,
                    )
                };
                if opts(o) != opts(s) {
                    d.options.push(shown(s));
                }
            }
        }
    }
    for o in old.all.iter().filter(|a| a.current) {
        if !new.get(o.spec.id).is_some_and(|n| n.current) {
            d.removed.push(shown(&o.spec));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(users: &[(&str, &str, &str)]) -> Config {
        let mut t = String::new();
        for (name, password, backend_password) in users {
            t.push_str(&format!(
                "[[users]]\nname = \"{name}\"\npassword = \"{password}\"\nbackend_user = \"{name}\"\nbackend_password = \"{backend_password}\"\n"
            ));
        }
        Config::parse(&t).unwrap()
    }

    fn ids(u: &Users) -> Vec<(String, u32, bool)> {
        u.all
            .iter()
            .map(|a| (a.spec.name.clone(), a.spec.id, a.current))
            .collect()
    }

    #[test]
    fn ids_are_stable_across_removal_reorder_and_return() {
        let a = Users::build(
            &cfg(&[("a", "1", "x"), ("b", "2", "x"), ("c", "3", "x")]),
            None,
        )
        .unwrap();
        assert_eq!(
            ids(&a),
            vec![
                ("a".into(), 0, true),
                ("b".into(), 1, true),
                ("c".into(), 2, true)
            ]
        );
        // b removed, c moved first, d added: nobody takes anyone else's id.
        let b = Users::build(
            &cfg(&[("c", "3", "x"), ("a", "1", "x"), ("d", "4", "x")]),
            Some(&a),
        )
        .unwrap();
        assert_eq!(
            ids(&b),
            vec![
                ("a".into(), 0, true),
                ("b".into(), 1, false),
                ("c".into(), 2, true),
                ("d".into(), 3, true)
            ]
        );
        let names: Vec<&str> = b.logins().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c", "d"]);
        // b comes back with its old id.
        let c = Users::build(&cfg(&[("b", "2", "x")]), Some(&b)).unwrap();
        assert_eq!(c.get(1).unwrap().spec.name, "b");
        assert!(c.get(1).unwrap().current);
        assert_eq!(c.first_current(), 1);
    }

    #[test]
    fn connection_counts_and_limits_follow_the_account() {
        let mut conf = cfg(&[("a", "1", "x"), ("b", "2", "x")]);
        conf.users[1].max_connections = 1;
        let u = Users::build(&conf, None).unwrap();
        assert_eq!(u.admit(1), Ok(()));
        assert_eq!(u.admit(1), Err(1));
        // Reordered and a limit raised: the count stays b's.
        let mut conf2 = cfg(&[("b", "2", "x"), ("a", "1", "x")]);
        conf2.users[0].max_connections = 2;
        let v = Users::build(&conf2, Some(&u)).unwrap();
        assert_eq!(v.get(1).unwrap().clients(), 1);
        assert_eq!(v.get(0).unwrap().clients(), 0);
        assert_eq!(v.admit(1), Ok(()));
        assert_eq!(v.admit(1), Err(2));
        // A removed user's sessions end later: counted down on the same account.
        let w = Users::build(&cfg(&[("a", "1", "x")]), Some(&v)).unwrap();
        w.leave(1);
        w.leave(1);
        w.leave(1);
        assert_eq!(w.get(1).unwrap().clients(), 0);
        // Unknown ids (never handed out) are ignored, not a panic.
        assert_eq!(w.admit(99), Ok(()));
        w.leave(99);
    }

    #[test]
    fn diffs_name_what_changed() {
        let old = Users::build(
            &cfg(&[("a", "1", "x"), ("b", "2", "x"), ("c", "3", "x")]),
            None,
        )
        .unwrap();
        let mut conf = cfg(&[("a", "1", "x"), ("b", "22", "y"), ("d", "4", "x")]);
        conf.users[0].max_connections = 5;
        let new = Users::build(&conf, Some(&old)).unwrap();
        #[rustfmt::skip]
        let want = UsersDiff {
            added: vec!["d".into()],
            removed: vec!["c".into()],
            credentials: vec!["b".into()],
            backend_account: vec!["b".into()],
            options: vec!["a".into()],
        };
        assert_eq!(diff(&old, &new), want);
        assert_eq!(
            want.describe(),
            vec![
                "users added: d",
                "users removed: c",
                "users password changed: b",
                "users backend account changed: b",
                "users options changed: a"
            ]
        );
        assert_eq!(diff(&new, &new), UsersDiff::default());
    }

    #[test]
    fn the_database_users_account_is_not_a_login() {
        let conf = Config::parse(
            "[auth_from_backend]\nuser = \"r\"\npassword = \"r\"\nbackend_user = \"p\"\nbackend_password = \"p\"\n",
        )
        .unwrap();
        let u = Users::build(&conf, None).unwrap();
        assert_eq!(u.db_account, Some(0));
        assert_eq!(u.logins().count(), 0);
        assert_eq!(u.current_count(), 1);
    }
}
