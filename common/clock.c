/* diskshelf: the monotonic clock. */
#include "clock.h"

#include <time.h>

/* Seconds on CLOCK_MONOTONIC. */
double
clock_seconds (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* CLOCK_MONOTONIC now plus seconds, normalised. */
void
clock_deadline_after (struct timespec *ts, double seconds)
{
  long long ns;

  clock_gettime (CLOCK_MONOTONIC, ts);
  ns = ts->tv_nsec + (long long) (seconds * 1e9);
  ts->tv_sec += (time_t) (ns / 1000000000);
  ts->tv_nsec = (long) (ns % 1000000000);
}
