//! The Redis store's clock: which time a node anchors on after reading Redis's `TIME` (see
//! `RedisStore::now`).

use std::time::Duration;

use crate::job::Micros;

/// A wall clock this close to Redis's is taken as it is (µs).
pub(super) const CLOCK_AGREE: Micros = 100_000;

/// The time a node anchors its clock on, from a `TIME` reading: Redis's `redis` (µs, taken as at
/// the round trip's midpoint), the node's wall clock `wall` at that midpoint, and the round trip
/// `rtt`. The wall clock when the two agree within [`CLOCK_AGREE`] plus half the round trip
/// (Redis read its clock anywhere within the round trip: a slow reply, from a Redis just
/// restarted and loading its file, leaves the midpoint up to half of it off, which alone must
/// not make a node that agrees with Redis stamp by a time off by as much); Redis's otherwise.
pub(super) fn clock_anchor(redis: Micros, wall: Micros, rtt: Duration) -> Micros {
    let slack = CLOCK_AGREE as u64 + rtt.as_micros() as u64 / 2;
    if redis.abs_diff(wall) <= slack {
        wall
    } else {
        redis
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Micros = 1_764_000_000_000_000;

    #[test]
    fn a_node_agreeing_with_redis_keeps_its_wall_clock_and_one_that_does_not_takes_redis() {
        let fast = Duration::from_micros(300);
        assert_eq!(clock_anchor(T + 40_000, T, fast), T);
        assert_eq!(clock_anchor(T - CLOCK_AGREE, T, fast), T);
        // Ten seconds apart: Redis's time, whichever way.
        assert_eq!(clock_anchor(T + 10_000_000, T, fast), T + 10_000_000);
        assert_eq!(clock_anchor(T - 10_000_000, T, fast), T - 10_000_000);
        assert_eq!(
            clock_anchor(T + CLOCK_AGREE + 200, T, fast),
            T + CLOCK_AGREE + 200
        );
    }

    #[test]
    fn a_slow_reply_does_not_make_an_agreeing_node_stamp_by_its_midpoint() {
        // Redis (just restarted) answered in 500 ms and read its clock at the start of the
        // round trip: taken as at the midpoint, it looks 250 ms behind a wall clock that agrees
        // with it. The node keeps its wall clock (the chaos suite's LOST run stamped 20 ms after
        // the next claim came from such an anchor).
        let slow = Duration::from_millis(500);
        assert_eq!(clock_anchor(T - 250_000, T, slow), T);
        assert_eq!(clock_anchor(T + 250_000, T, slow), T);
        // Beyond what the round trip explains, Redis's time again.
        assert_eq!(clock_anchor(T - 400_000, T, slow), T - 400_000);
    }
}
