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
