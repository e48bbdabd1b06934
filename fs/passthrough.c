/* diskshelf: FUSE passthrough on libfuse 3.14 (see passthrough.h).
 *
 * Wire facts from the kernel's include/uapi/linux/fuse.h (protocol 7.40,
 * Linux 6.9+); Debian 12's <linux/fuse.h> is older and lacks them, so the
 * few structs and numbers used here are spelt out with a pt_ prefix.
 */
#include "passthrough.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "error.h"

/* fuse.h: INIT flags; bits 32..63 travel in flags2. */
#define PT_FUSE_WRITEBACK_CACHE (1u << 16)
#define PT_FUSE_INIT_EXT (1u << 30)
#define PT_FUSE_PASSTHROUGH_FLAGS2 (1u << (37 - 32))
#define PT_FUSE_INIT 26
#define PT_FOPEN_PASSTHROUGH (1u << 7)

struct pt_in_header
{
  uint32_t len, opcode;
  uint64_t unique, nodeid;
  uint32_t uid, gid, pid;
  uint16_t total_extlen, padding;
};

struct pt_out_header
{
  uint32_t len;
  int32_t error;
  uint64_t unique;
};

struct pt_init_in
{
  uint32_t major, minor, max_readahead, flags, flags2;
  uint32_t unused[11];
};

struct pt_init_out
{
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2, max_stack_depth;
  uint16_t request_timeout;
  uint16_t unused[11];
};

struct pt_open_out
{
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};

struct pt_backing_map
{
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};

#define PT_DEV_IOC_MAGIC 229
#define PT_DEV_IOC_BACKING_OPEN _IOW (PT_DEV_IOC_MAGIC, 1, struct pt_backing_map)
#define PT_DEV_IOC_BACKING_CLOSE _IOW (PT_DEV_IOC_MAGIC, 2, uint32_t)

_Static_assert (sizeof (struct pt_in_header) == 40, "fuse_in_header");
_Static_assert (sizeof (struct pt_out_header) == 16, "fuse_out_header");
_Static_assert (sizeof (struct pt_init_in) == 64, "fuse_init_in");
_Static_assert (sizeof (struct pt_init_out) == 64, "fuse_init_out");
_Static_assert (offsetof (struct pt_init_out, flags2) == 32, "flags2");
_Static_assert (offsetof (struct pt_init_out, max_stack_depth) == 36,
                "max_stack_depth");
_Static_assert (sizeof (struct pt_open_out) == 16, "fuse_open_out");
_Static_assert (sizeof (struct pt_backing_map) == 16, "fuse_backing_map");

/* The kernel refuses a read buffer smaller than this (FUSE_MIN_READ_BUFFER
 * plus room for a write of the default max_write before INIT). */
#define INIT_READ_BUFFER (128 * 1024)

static bool enabled;            /* set once, before any worker thread */
static int dev_fd = -1;         /* the session's /dev/fuse fd */

/* One registered backing file. */
struct backing
{
  struct backing *next;
  dev_t dev;
  ino_t ino;
  uint32_t id;
  unsigned refs;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct backing *registry;        /* protected by registry_lock */
static unsigned registry_count;         /* protected by registry_lock */

/* True when this process may register backing files: the kernel checks
 * CAP_SYS_ADMIN in the initial user namespace. */
static bool
have_sys_admin (void)
{
  struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct data[2];

  memset (data, 0, sizeof data);
  if (syscall (SYS_capget, &hdr, data) != 0)
    return false;
  return (data[CAP_SYS_ADMIN / 32].effective
          & (1u << (CAP_SYS_ADMIN % 32))) != 0;
}

/* Read one whole message from fd into buf: its length or -errno. */
static ssize_t
read_message (int fd, void *buf, size_t size)
{
  ssize_t n;

  do
    n = read (fd, buf, size);
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

/* Write one whole message: 0 or -errno. */
static int
write_message (int fd, const void *buf, size_t len)
{
  ssize_t n;

  do
    n = write (fd, buf, len);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  return (size_t) n == len ? 0 : -EIO;
}

/* Let libfuse answer the INIT request in `in` as if it came from
 * /dev/fuse, with a socketpair in place of session_fd; its answer comes
 * back in out (size bytes).  Returns the answer's length or -errno. */
static ssize_t
libfuse_answer (struct fuse_session *se, int session_fd, const void *in,
                size_t in_len, void *out, size_t size)
{
  struct fuse_buf fbuf = { .mem = NULL };
  int sv[2], real_fd, fd_flags, r;
  ssize_t n = -EIO;

  fd_flags = fcntl (session_fd, F_GETFD);
  real_fd = fcntl (session_fd, F_DUPFD_CLOEXEC, 0);
  if (real_fd < 0)
    return -errno;
  if (socketpair (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    {
      r = -errno;
      close (real_fd);
      return r;
    }
  if (dup2 (sv[0], session_fd) < 0)
    {
      n = -errno;
      goto out;
    }
  r = write_message (sv[1], in, in_len);
  if (r < 0)
    {
      n = r;
      goto restore;
    }
  r = fuse_session_receive_buf (se, &fbuf);
  if (r <= 0)
    {
      n = r < 0 ? r : -EIO;
      goto restore;
    }
  fuse_session_process_buf (se, &fbuf);
  n = read_message (sv[1], out, size);

 restore:
  /* dup3 sets the close-on-exec flag the fd had; dup2 would drop it. */
  if (dup3 (real_fd, session_fd,
            fd_flags >= 0 && (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0
      && n >= 0)
    n = -errno;
 out:
  free (fbuf.mem);
  close (sv[0]);
  close (sv[1]);
  close (real_fd);
  return n;
}

int
passthrough_negotiate (struct fuse_session *se)
{
  int fd = fuse_session_fd (se);
  const char *why_not = NULL;
  unsigned char *in;
  unsigned char out[4096];
  struct pt_in_header ih;
  struct pt_init_in ii = { 0 };
  struct pt_out_header oh;
  struct pt_init_out io;
  ssize_t in_len, out_len;
  int r;

  in = malloc (INIT_READ_BUFFER);
  if (in == NULL)
    return error_set (ENOMEM, "passthrough: no memory for INIT");
  in_len = read_message (fd, in, INIT_READ_BUFFER);
  if (in_len < 0)
    {
      free (in);
      return error_set ((int) -in_len, "passthrough: reading INIT from"
                        " /dev/fuse: %s", strerror ((int) -in_len));
    }
  if ((size_t) in_len < sizeof ih)
    {
      free (in);
      return error_set (EIO, "passthrough: short first request (%zd bytes)",
                        in_len);
    }
  memcpy (&ih, in, sizeof ih);
  if (ih.opcode != PT_FUSE_INIT)
    {
      free (in);
      return error_set (EIO, "passthrough: first request is opcode %u,"
                        " not INIT", ih.opcode);
    }
  memcpy (&ii, in + sizeof ih,
          (size_t) in_len - sizeof ih < sizeof ii
          ? (size_t) in_len - sizeof ih : sizeof ii);

  out_len = libfuse_answer (se, fd, in, (size_t) in_len, out, sizeof out);
  free (in);
  if (out_len < 0)
    return error_set ((int) -out_len, "passthrough: answering INIT through"
                      " libfuse: %s", strerror ((int) -out_len));
  if ((size_t) out_len < sizeof oh)
    return error_set (EIO, "passthrough: libfuse's INIT answer is %zd"
                      " bytes", out_len);
  memcpy (&oh, out, sizeof oh);

  /* Decide; a reason not to leaves the answer as libfuse wrote it. */
  if (oh.error != 0)
    why_not = "libfuse refused INIT";
  else if ((size_t) out_len < sizeof oh + sizeof io)
    why_not = "the kernel speaks an older protocol";
  else if (ii.major != 7 || ii.minor < 40 || !(ii.flags & PT_FUSE_INIT_EXT)
           || !(ii.flags2 & PT_FUSE_PASSTHROUGH_FLAGS2))
    why_not = "the kernel does not offer it (Linux 6.9+ with"
              " CONFIG_FUSE_PASSTHROUGH)";
  else if (!have_sys_admin ())
    why_not = "registering backing files needs CAP_SYS_ADMIN";
  if (why_not == NULL)
    {
      memcpy (&io, out + sizeof oh, sizeof io);
      if (io.flags & PT_FUSE_WRITEBACK_CACHE)
        why_not = "the writeback cache is on";
      else
        {
          io.flags |= PT_FUSE_INIT_EXT;
          io.flags2 |= PT_FUSE_PASSTHROUGH_FLAGS2;
          io.max_stack_depth = PASSTHROUGH_STACK_DEPTH;
          memcpy (out + sizeof oh, &io, sizeof io);
        }
    }

  r = write_message (fd, out, (size_t) out_len);
  if (r < 0)
    return error_set (-r, "passthrough: writing INIT answer to /dev/fuse:"
                      " %s", strerror (-r));
  dev_fd = fd;
  enabled = why_not == NULL;
  if (enabled)
    log_info ("FUSE passthrough on (protocol 7.%u)", ii.minor);
  else
    log_info ("FUSE passthrough off: %s", why_not);
  return 0;
}

bool
passthrough_enabled (void)
{
  return enabled;
}

int
passthrough_backing_get (int fd, uint32_t *backing_id)
{
  struct pt_backing_map map = { .fd = fd, .flags = 0, .padding = 0 };
  struct backing *b;
  struct stat st;
  int id, err;

  if (!enabled)
    return error_set (ENOTSUP, "passthrough: off");
  if (fstat (fd, &st) != 0)
    {
      err = errno;
      return error_set (err, "passthrough: backing file: %s", strerror (err));
    }
  pthread_mutex_lock (&registry_lock);
  for (b = registry; b != NULL; b = b->next)
    if (b->dev == st.st_dev && b->ino == st.st_ino)
      {
        b->refs++;
        *backing_id = b->id;
        pthread_mutex_unlock (&registry_lock);
        return 0;
      }
  b = calloc (1, sizeof *b);
  if (b == NULL)
    {
      pthread_mutex_unlock (&registry_lock);
      return error_set (ENOMEM, "passthrough: no memory");
    }
  id = ioctl (dev_fd, PT_DEV_IOC_BACKING_OPEN, &map);
  if (id < 0)
    {
      err = errno;
      pthread_mutex_unlock (&registry_lock);
      free (b);
      return error_set (err, "passthrough: registering a backing file: %s",
                        strerror (err));
    }
  b->dev = st.st_dev;
  b->ino = st.st_ino;
  b->id = (uint32_t) id;
  b->refs = 1;
  b->next = registry;
  registry = b;
  registry_count++;
  pthread_mutex_unlock (&registry_lock);
  *backing_id = (uint32_t) id;
  return 0;
}

void
passthrough_backing_put (uint32_t backing_id)
{
  struct backing **p, *b;

  pthread_mutex_lock (&registry_lock);
  for (p = &registry; (b = *p) != NULL; p = &b->next)
    if (b->id == backing_id)
      break;
  if (b != NULL && --b->refs == 0)
    {
      *p = b->next;
      registry_count--;
      /* Opens already using it hold the kernel's own reference.  After
       * the session ended its fd number may be another file's. */
      if (dev_fd >= 0
          && ioctl (dev_fd, PT_DEV_IOC_BACKING_CLOSE, &backing_id) != 0)
        log_warning ("passthrough: unregistering backing file %u: %s",
                     backing_id, strerror (errno));
      free (b);
    }
  pthread_mutex_unlock (&registry_lock);
}

void
passthrough_session_ended (void)
{
  pthread_mutex_lock (&registry_lock);
  enabled = false;
  dev_fd = -1;
  pthread_mutex_unlock (&registry_lock);
}

unsigned
passthrough_backing_count (void)
{
  unsigned n;

  pthread_mutex_lock (&registry_lock);
  n = registry_count;
  pthread_mutex_unlock (&registry_lock);
  return n;
}

int
passthrough_reply_open (fuse_req_t req, uint64_t fh, uint32_t open_flags,
                        uint32_t backing_id)
{
  struct pt_open_out out = {
    .fh = fh,
    .open_flags = open_flags | PT_FOPEN_PASSTHROUGH,
    .backing_id = (int32_t) backing_id,
  };

  return fuse_reply_buf (req, (const char *) &out, sizeof out);
}

void
passthrough_inode_init (struct passthrough_inode *pi)
{
  pthread_mutex_init (&pi->lock, NULL);
  pi->passthrough_opens = 0;
  pi->cached_opens = 0;
  pi->backing_id = 0;
  pi->lend.release = NULL;
  pi->lend.arg = NULL;
}

void
passthrough_inode_destroy (struct passthrough_inode *pi)
{
  pthread_mutex_destroy (&pi->lock);
}

/* Release what lent a backing file, if anything. */
static void
lend_release (const struct passthrough_lend *lend)
{
  if (lend != NULL && lend->release != NULL)
    lend->release (lend->arg);
}

bool
passthrough_inode_open (struct passthrough_inode *pi, int backing_fd,
                        const struct passthrough_lend *lend,
                        bool direct_io, uint32_t *backing_id)
{
  static bool warned;           /* a benign race: at worst two lines */
  bool passthrough = false, lend_used = false;

  pthread_mutex_lock (&pi->lock);
  if (pi->passthrough_opens > 0)
    {
      /* The kernel would fail any other kind of open with EIO. */
      pi->passthrough_opens++;
      *backing_id = pi->backing_id;
      passthrough = true;
    }
  else if (enabled && backing_fd >= 0 && pi->cached_opens == 0)
    {
      if (passthrough_backing_get (backing_fd, &pi->backing_id) == 0)
        {
          pi->passthrough_opens = 1;
          *backing_id = pi->backing_id;
          passthrough = lend_used = true;
          pi->lend.release = lend ? lend->release : NULL;
          pi->lend.arg = lend ? lend->arg : NULL;
        }
      else if (!warned)
        {
          warned = true;
          log_warning ("%s; reading through the daemon instead",
                       error_message ());
        }
    }
  if (!passthrough && !direct_io)
    pi->cached_opens++;
  pthread_mutex_unlock (&pi->lock);
  if (!lend_used)
    lend_release (lend);
  return passthrough;
}

void
passthrough_inode_release (struct passthrough_inode *pi,
                           bool was_passthrough, bool direct_io)
{
  struct passthrough_lend lend = { NULL, NULL };
  uint32_t put_id = 0;
  bool put = false;

  pthread_mutex_lock (&pi->lock);
  if (was_passthrough)
    {
      if (pi->passthrough_opens > 0 && --pi->passthrough_opens == 0)
        {
          put = true;
          put_id = pi->backing_id;
          lend = pi->lend;
          pi->lend.release = NULL;
          pi->lend.arg = NULL;
        }
    }
  else if (!direct_io && pi->cached_opens > 0)
    pi->cached_opens--;
  pthread_mutex_unlock (&pi->lock);
  if (put)
    {
      passthrough_backing_put (put_id);
      lend_release (&lend);
    }
}
