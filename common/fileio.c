/* diskshelf: whole writes and zeroed ranges on a file descriptor. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

int
fd_pwrite_all (int fd, const void *buf, size_t count, uint64_t offset)
{
  const char *p = buf;

  while (count > 0)
    {
      ssize_t n = pwrite (fd, p, count, (off_t) offset);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return error_set (errno, "write at %llu: %s",
                          (unsigned long long) offset, strerror (errno));
      p += n;
      count -= (size_t) n;
      offset += (uint64_t) n;
    }
  return 0;
}

int
fd_zero_range (int fd, uint64_t offset, uint64_t length, int try_zero_range)
{
  static const size_t step = 1024 * 1024;
  char *zeroes;
  int r = 0;

  if (try_zero_range
      && fallocate (fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                    (off_t) offset, (off_t) length) == 0)
    return 0;
  if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 (off_t) offset, (off_t) length) == 0)
    return 0;
  zeroes = calloc (1, step);
  if (zeroes == NULL)
    return error_set (ENOMEM, "out of memory");
  while (length > 0 && r == 0)
    {
      size_t n = length < step ? length : step;
      r = fd_pwrite_all (fd, zeroes, n, offset);
      offset += n;
      length -= n;
    }
  free (zeroes);
  return r;
}
