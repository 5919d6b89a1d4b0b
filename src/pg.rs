//! Knowledge of PostgreSQL itself: WAL file names and page headers ([`wal`]), timeline
//! history files ([`timeline`]), and the database connection with the queries commands need
//! ([`db`]).

pub mod db;
pub mod page;
pub mod timeline;
pub mod wal;
