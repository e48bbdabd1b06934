/* Fuzz harness: a persistent overlay file as found on disk
 * (backends/overlay/store.c's overlay_store_open_file: header, base
 * check, map), for a 1 MiB image whose base identity is "fuzz". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "overlay/overlay-internal.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct overlay_store s;
  char path[64];
  int fd;

  if (size == 0)
    return 0;     /* an empty file is made afresh, beside it: not here */
  fd = memfd_create ("fuzz.overlay", MFD_CLOEXEC);
  if (fd < 0)
    return 0;
  if (write (fd, data, size) == (ssize_t) size)
    {
      snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
      if (overlay_store_open_file (&s, path, 1 << 20, "fuzz", "fuzz") == 0)
        {
          (void) overlay_store_owned (&s);
          (void) overlay_store_run_end (&s, 0, s.nblocks);
          overlay_store_close (&s);
        }
      error_clear ();
    }
  close (fd);
  return 0;
}
