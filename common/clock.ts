/**
 * Time for scheduling: the wall clock as it read when this process started, plus the
 * monotonic time elapsed since. It never jumps when the wall clock is set (NTP stepping
 * it, an operator, a VM resumed): a retry due in 2 s stays due in 2 s, a lease of 40 s
 * lasts 40 s. What is shown to people or sent to receivers (webhook-timestamp, created and
 * finished times, budget periods, key expiry) stays on the wall clock. Across a restart the
 * two agree again; deliveries scheduled before it keep the old reading (see README, Faults).
 */
export function steadyNow(): number {
  return Math.floor(WALL_AT_LOAD + performance.now());
}

// Read from Date.now (not performance.timeOrigin) so that, before any step, this clock is
// never ahead of Date.now: a row due "now" here is due for a caller that asks with Date.now.
const WALL_AT_LOAD = Date.now() - performance.now();
