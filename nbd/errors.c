/* diskshelf nbd: the per-thread last error, so the library stands alone. */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static __thread char last_message[1024];
static __thread int last_errno;

/* Record a message and errno for this thread; returns -errnum. */
int
nbd_set_error (int errnum, const char *fmt, ...)
{
  va_list ap;

  if (errnum <= 0)
    errnum = errnum < 0 ? -errnum : EIO;
  va_start (ap, fmt);
  vsnprintf (last_message, sizeof last_message, fmt, ap);
  va_end (ap);
  last_errno = errnum;
  return -errnum;
}

/* Put "prefix: " before this thread's message; returns -errnum. */
int
nbd_prefix_error (int errnum, const char *fmt, ...)
{
  char prefix[512];
  char old[sizeof last_message];
  va_list ap;

  if (errnum < 0)
    errnum = -errnum;
  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, last_message, sizeof old);
  snprintf (last_message, sizeof last_message, "%s: %s", prefix,
            old[0] ? old : strerror (errnum));
  last_errno = errnum;
  return -errnum;
}

/* Read back this thread's last message. */
const char *
nbd_get_error (void)
{
  return last_message;
}

/* Read back this thread's last errno. */
int
nbd_get_errno (void)
{
  return last_errno;
}

/* Map an NBD wire error to an errno; unknown values become EINVAL. */
int
nbd_errno_from_wire (uint32_t err)
{
  switch (err)
    {
    case NBD_EPERM: return EPERM;
    case NBD_EIO: return EIO;
    case NBD_ENOMEM: return ENOMEM;
    case NBD_EINVAL: return EINVAL;
    case NBD_ENOSPC: return ENOSPC;
    case NBD_EOVERFLOW: return EOVERFLOW;
    case NBD_ENOTSUP: return ENOTSUP;
    case NBD_ESHUTDOWN: return ESHUTDOWN;
    default: return EINVAL;
    }
}
