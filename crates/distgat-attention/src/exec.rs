/// How a kernel spreads its work. Results are bitwise identical either way: work is split
/// into chunks whose boundaries do not depend on the thread count, and each output row is
/// computed by one thread in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Execution {
    /// Run on the calling thread.
    Sequential,
    /// Run on the current rayon pool.
    #[default]
    Parallel,
}
