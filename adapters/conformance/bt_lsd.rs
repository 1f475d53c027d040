//! Local Service Discovery (BEP 14): clients on one network find each
//! other by multicast, with no tracker and no `--peer`.

mod common;
