/* diskshelf: the shared run of zero bytes (see zeroes.h). */
#include "zeroes.h"

#include <pthread.h>
#include <sys/mman.h>

static pthread_once_t zeroes_once = PTHREAD_ONCE_INIT;
static const void *zero_run;

static void
map_zero_run (void)
{
  void *p = mmap (NULL, ZEROES_MAX, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS
                  | MAP_NORESERVE, -1, 0);

  zero_run = p == MAP_FAILED ? NULL : p;
}

const void *
zeroes (size_t count)
{
  if (count > ZEROES_MAX)
    return NULL;
  pthread_once (&zeroes_once, map_zero_run);
  return zero_run;
}
