//! The user directory: who may log in on this shard, by name, and what a login learned about
//! them.
//!
//! Owns the shard's `users` (the configured accounts that may log in, by name, rebuilt from the
//! process's [`crate::users::Users`] snapshot when a reload publishes a new one; `users_snap` is
//! that snapshot), `db_users` (users loaded from the database, looked up after the configured
//! ones; replaced by a [`ShardMsg::DbUsers`] message) and `sha2_cache` (caching_sha2_password
//! fast-path hashes learned from full authentications, shared with the other shards by
//! [`ShardMsg::Sha2Cached`]). A session keeps the `Rc<User>` it logged in with: a reload changes
//! who may log in next, not who is logged in.

use super::{Shard, ShardMsg};
use crate::frontend::session::User;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

impl Shard {
    /// The user a client logs in as `name`: a configured one, else one loaded from the
    /// database.
    pub(crate) fn user(&self, name: &[u8]) -> Option<Rc<User>> {
        // A login uses the users as reloaded at once.
        self.cfg();
        self.users
            .borrow()
            .get(name)
            .cloned()
            .or_else(|| self.db_users.borrow().get(name).cloned())
    }

    /// The name of the user whose id is `id` (a configured account, listed now or not, or a
    /// user loaded from the database): how a KILL names its user to the other process of an
    /// upgrade, whose ids may differ (see `upgrade::peer`).
    pub(crate) fn user_name(&self, id: u32) -> Option<String> {
        if id < crate::users::DB_USER_IDS_FROM {
            return self.shared.users().get(id).map(|a| a.spec.name.clone());
        }
        self.db_users
            .borrow()
            .values()
            .find(|u| u.id == id)
            .map(|u| u.name.to_string())
    }

    /// This process's id of the user named `name`, as a login would find it: a configured
    /// user listed now, else one loaded from the database, else an account no longer listed
    /// (its sessions may still run).
    pub(crate) fn user_id_named(&self, name: &str) -> Option<u32> {
        let users = self.shared.users();
        let account = users
            .all
            .iter()
            .find(|a| a.spec.name == name && a.spec.name != crate::users::DB_ACCOUNT);
        if let Some(a) = account.filter(|a| a.current) {
            return Some(a.spec.id);
        }
        if let Some(u) = self.db_users.borrow().get(name.as_bytes()) {
            return Some(u.id);
        }
        account.map(|a| a.spec.id)
    }

    /// Replaces the users loaded from the database (sessions already open keep theirs).
    pub(crate) fn set_db_users(&self, list: &[(u32, crate::bootstrap::DbUser)]) {
        let Some(account) = self.shared.db_account else {
            return;
        };
        let users = self.shared.users();
        let Some(spec) = users.get(account).map(|a| a.spec.clone()) else {
            return;
        };
        let map = list
            .iter()
            .map(|(id, u)| {
                let credential = crate::auth::Credential {
                    plugin: crate::auth::Plugin::Native,
                    native: Some(u.native),
                    sha2: None,
                    crypt: None,
                    plaintext: false,
                    empty: false,
                };
                let user = User {
                    index: account,
                    id: *id,
                    name: u.name.clone().into(),
                    credential,
                    pool_mode: spec.pool_mode,
                    require_tls: false,
                    reads: spec.reads,
                    consistency: spec.consistency,
                };
                (u.name.as_bytes().to_vec(), Rc::new(user))
            })
            .collect();
        *self.db_users.borrow_mut() = map;
    }

    /// Takes the users a reload published: logins look up the new list; every pool of an
    /// account whose backend account changed opens its next connections with the new one and
    /// retires the old (idle ones close now, busy ones as they come back, as RECONNECT does);
    /// caching_sha2 fast-path hashes learned for a changed password are forgotten.
    pub(super) fn refresh_users(&self) {
        let new = self.shared.users();
        let old = self.users_snap.replace(new.clone());
        if Arc::ptr_eq(&old, &new) {
            return;
        }
        *self.users.borrow_mut() = login_map(&new);
        for a in new.all.iter().filter(|a| a.current) {
            self.make_row(a.spec.id);
        }
        let rows = self.pools.borrow().clone();
        for (id, row) in rows.iter().enumerate() {
            let (Some(n), Some(o)) = (new.get(id as u32), old.get(id as u32)) else {
                continue;
            };
            if (&n.spec.backend_user, &n.spec.backend_password)
                != (&o.spec.backend_user, &o.spec.backend_password)
            {
                for p in row {
                    p.set_account(&n.spec.backend_user, &n.spec.backend_password);
                }
            }
            if n.spec.credential != o.spec.credential {
                self.sha2_cache.borrow_mut().remove(&(id as u32));
            }
        }
    }

    /// The cached caching_sha2 fast-path hash of `user`, if a full authentication filled it.
    pub(crate) fn sha2_cached(&self, user: u32) -> Option<[u8; 32]> {
        self.sha2_cache.borrow().get(&user).copied()
    }

    /// Takes a fast-path hash another shard learned ([`ShardMsg::Sha2Cached`]).
    pub(super) fn sha2_cache_learn(&self, user: u32, stage2: [u8; 32]) {
        self.sha2_cache.borrow_mut().insert(user, stage2);
    }

    /// Caches a fast-path hash here and on every other shard of this process.
    pub(crate) fn sha2_cache_fill(&self, user: u32, stage2: [u8; 32]) {
        self.sha2_cache.borrow_mut().insert(user, stage2);
        if let Some(mbs) = self.shared.mailboxes.get() {
            for (i, mb) in mbs.iter().enumerate() {
                if i != self.id {
                    mb.post(ShardMsg::Sha2Cached { user, stage2 });
                }
            }
        }
    }
}

/// The users a client may log in as in `users`, by name, as a shard keeps them.
pub(super) fn login_map(users: &crate::users::Users) -> HashMap<Vec<u8>, Rc<User>> {
    users
        .logins()
        .map(|u| {
            (
                u.name.as_bytes().to_vec(),
                Rc::new(User {
                    index: u.id,
                    id: u.id,
                    name: u.name.clone().into(),
                    credential: u.credential.clone(),
                    pool_mode: u.pool_mode,
                    require_tls: u.require_tls,
                    reads: u.reads,
                    consistency: u.consistency,
                }),
            )
        })
        .collect()
}
