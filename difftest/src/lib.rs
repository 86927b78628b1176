//! sluice's differential tester: the same generated client sessions run directly against MariaDB
//! and again through sluice (in each pool mode), compared response by response.
//!
//! - [`gen`] writes seeded, meaningful session scripts ([`script`]) from a weighted corpus;
//! - [`setup`] gives each session its own fresh schemas before every run;
//! - [`session`] plays a script over a raw protocol [`client`] built on sluice's codec, and
//!   [`record`] turns every response packet into transcript lines, with the few legitimate
//!   differences removed by [`normalize`] (and nothing else);
//! - [`runner`] runs direct first, then each proxy, and [`compare`] prints a reproducer for the
//!   first difference of each session.

pub mod client;
pub mod compare;
pub mod gen;
pub mod normalize;
pub mod record;
pub mod rng;
pub mod runner;
pub mod script;
pub mod session;
pub mod setup;
