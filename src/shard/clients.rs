//! The console's SHOW CLIENTS on one shard: a row per client, read from the session table
//! (a parked session is known whole; an active one by what its control block says), answering
//! [`ShardMsg::Clients`](super::ShardMsg::Clients). Owns nothing; reads the table, the user
//! directory and the backends.

use super::table::SlotState;
use super::Shard;
use crate::frontend::session::{self, User};
use std::os::fd::AsRawFd;
use std::rc::Rc;

impl Shard {
    /// This shard's clients as the console lists them. A parked session is known whole; an
    /// active one (its session is with its task) by what its control block says.
    pub(crate) fn clients(&self) -> Vec<crate::metrics::ClientRow> {
        let now = self.clock();
        let table = self.table.borrow();
        // An active session's login name by its user id: a configured user's id is its account id;
        // users loaded from the database have ids of their own, after those.
        let db_names: std::collections::HashMap<u32, Rc<User>> = self
            .db_users
            .borrow()
            .values()
            .map(|u| (u.id, u.clone()))
            .collect();
        let users = self.shared.users();
        let name_of = |id: u32| match users.get(id) {
            Some(u) => u.spec.name.clone(),
            None => db_names
                .get(&id)
                .map(|u| u.name.to_string())
                .unwrap_or_default(),
        };
        let source = |fd: std::os::fd::RawFd| {
            crate::net::peer_addr(&fd).map(|a| (a.ip().to_canonical().to_string(), a.port()))
        };
        table
            .tokens()
            .into_iter()
            .filter_map(|t| {
                let slot = table.get(t)?;
                let mut row = crate::metrics::ClientRow {
                    id: slot.conn_id,
                    shard: self.id as u32,
                    ..Default::default()
                };
                match &slot.state {
                    SlotState::Parked(s) => {
                        row.user = s.user.name.to_string();
                        (row.source, row.port) = source(s.fd.as_raw_fd()).unzip();
                        row.state = if s.pinned() { "pinned" } else { "parked" }.into();
                        row.schema = s.settings.schema.as_deref().map(|x| x.to_string());
                        row.backend = s
                            .lease
                            .as_ref()
                            .map(|l| self.backend(l.get().backend).address.clone());
                        row.idle_s = u64::from(now.saturating_sub(s.last_active));
                        row.holds = session::held_by(s);
                    }
                    SlotState::Active(ctl) => {
                        if ctl.logged_in.get() {
                            row.user = name_of(ctl.user.get());
                        }
                        (row.source, row.port) = ctl.fd.get().and_then(source).unzip();
                        row.busy = ctl.serving.get();
                        row.command = row.busy.then(|| {
                            crate::codec::command::thread_command(ctl.command.get()).to_string()
                        });
                        row.state = if ctl.gated.get() {
                            "paused" // its command waits for RESUME
                        } else {
                            "active"
                        }
                        .into();
                        row.backend = ctl
                            .running()
                            .map(|r| self.backend(r.backend).address.clone());
                        if let Some(s) = ctl.seen.borrow().as_ref() {
                            row.schema = s.schema.as_deref().map(|x| x.to_string());
                        }
                        if !row.busy {
                            row.idle_s = u64::from(now.saturating_sub(ctl.last_active.get()));
                        }
                    }
                    SlotState::Free => return None,
                }
                Some(row)
            })
            .collect()
    }
}
