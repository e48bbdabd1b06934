/* diskshelf: the monotonic clock, for timeouts, back-off and rates.
 *
 * Thread model: safe from any thread.
 */
#ifndef DISKSHELF_CLOCK_H
#define DISKSHELF_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin; only differences
 * mean anything). */
double clock_seconds (void);

struct timespec;

/* *ts = CLOCK_MONOTONIC now plus `seconds`: a deadline for
 * pthread_cond_timedwait on a condition set to that clock. */
void clock_deadline_after (struct timespec *ts, double seconds);

#endif
