//! XDP front: loads, attaches and pins the kernel program and keeps its maps
//! (I/O edge, aya).

pub mod cli;
