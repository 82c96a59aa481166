//! The prepare fan-out: protocol, executors and the worker.
