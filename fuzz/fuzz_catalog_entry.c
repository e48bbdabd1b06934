/* Fuzz harness: one catalog entry file (config/entry.c's entry_parse). */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "entry.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct entry_config *e = NULL;
  char *errors = NULL;
  char path[64];
  int fd = memfd_create ("entry.conf", MFD_CLOEXEC);

  if (fd < 0)
    return 0;
  if (write (fd, data, size) == (ssize_t) size)
    {
      snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
      if (entry_parse (path, "fuzz.img", &e, &errors) == 0)
        entry_free (e);
      free (errors);
    }
  close (fd);
  return 0;
}
