//! Work split over two threads (the machine Berth targets has two cores): snapshot chunks, index building at
//! load, a batch's deferred index updates, wide hops of graph walks.

use std::sync::Mutex;

/// Runs `f` on every item on two threads, each taking the next item when it is free (put the largest first
/// for balance), and answers the results in the items' order; `None` if a worker panicked.
pub fn on_two_threads<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Option<Vec<R>> {
    let queue = Mutex::new(items.into_iter().enumerate());
    let work = || {
        let mut done = Vec::new();
        loop {
            let next = match queue.lock() {
                Ok(mut q) => q.next(),
                Err(poisoned) => poisoned.into_inner().next(),
            };
            match next {
                Some((i, item)) => done.push((i, f(item))),
                None => return done,
            }
        }
    };
    let (theirs, mine) = std::thread::scope(|scope| {
        let theirs = scope.spawn(work);
        let mine = work();
        (theirs.join(), mine)
    });
    let mut all: Vec<(usize, R)> = mine.into_iter().chain(theirs.ok()?).collect();
    all.sort_by_key(|(i, _)| *i);
    Some(all.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_items_order() {
        let items: Vec<u64> = (0..1000).collect();
        let out = on_two_threads(items.clone(), |i| i * 2).expect("no panic");
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(on_two_threads(Vec::<u8>::new(), |i| i), Some(Vec::new()));
    }
}
