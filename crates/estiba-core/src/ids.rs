//! Identifiers and time are inputs to the core, never produced by it: the caller passes an
//! [`Ids`] source and the current time, so every function here is deterministic and testable.

/// Seconds since the Unix epoch, as AWS JSON timestamps are.
pub type Now = f64;

pub trait Ids {
    /// A random UUID, lowercase with hyphens.
    fn uuid(&mut self) -> String;
    /// 32 lowercase hex characters: the form of task and container instance ids.
    fn hex32(&mut self) -> String {
        self.uuid().replace('-', "")
    }
    /// A random number for deployment ids (`ecs-svc/<n>`), 19 digits like ECS's.
    fn deployment_number(&mut self) -> u64;
    /// A new task's id: 32 lowercase hex characters, as [`Ids::hex32`]. The server's
    /// `RandomIds` makes it time-ordered: the store keeps tasks by
    /// id, and new tasks that sort together are written together.
    fn task_id(&mut self) -> String {
        self.hex32()
    }
}

/// A predictable id source for tests: counters instead of randomness.
#[derive(Default)]
pub struct SeqIds {
    n: u64,
}

impl Ids for SeqIds {
    fn uuid(&mut self) -> String {
        self.n += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.n)
    }

    fn deployment_number(&mut self) -> u64 {
        self.n += 1;
        1_000_000_000_000_000_000 + self.n
    }
}
