/* tests/tools/pt_serve: a tiny low-level FUSE server proving
 * fs/passthrough.c, for tests/test_passthrough.py and
 * bench/bench_passthrough.sh.
 *
 *   pt_serve [-s] [-c before|after] [-o keep_cache|direct_io] BACKING
 *            MOUNTPOINT [MARKER]
 *
 * Mounts MOUNTPOINT (foreground, until unmounted or signalled) with:
 *   pt      BACKING's bytes, opened with passthrough when the kernel
 *           allows it;
 *   normal  the same bytes, always served with READs (pread into a
 *           buffer, then fuse_reply_buf: the daemon's copy path);
 *   late    the same bytes; an open wants passthrough only while the
 *           file MARKER exists (a disk-cache object that becomes
 *           complete), and otherwise asks for READs; the kernel's io-mode
 *           rule is kept by struct passthrough_inode;
 *   unruly  like late, without struct passthrough_inode: each open is
 *           passthrough exactly while MARKER exists, so the kernel's rule
 *           can be seen failing opens;
 *   stats   text: "passthrough 0|1", then "reads NAME N" (READ requests
 *           received per file), "opens NAME PT CACHED" (opens answered
 *           each way), "open-now NAME PT CACHED" (those not released yet,
 *           as struct passthrough_inode counts them), "backing N"
 *           (registered backing files) and "lent N" (late's lends, the
 *           stand-in for a disk-cache pin, not yet released).
 * -s runs the single-threaded loop; the default is the daemon's
 * multithreaded loop (64 threads, no clone_fd).  -c drops CAP_SYS_ADMIN
 * after mounting, before or after the INIT exchange: the two ways a
 * daemon without it must fall back to READs.  -o adds FOPEN_KEEP_CACHE
 * or FOPEN_DIRECT_IO to every open reply of pt, late and unruly
 * (passthrough or not; without it, opens served with READs keep the
 * cache and passthrough opens have no other flag).
 *
 * A test tool, not installed.  Thread model: requests run on libfuse's
 * threads; counters are atomics; the passthrough records lock
 * themselves.
 */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "error.h"
#include "passthrough.h"

enum { INO_ROOT = 1, INO_PT, INO_NORMAL, INO_LATE, INO_UNRULY, INO_STATS,
       INO_END };

static const char *const names[INO_END] = {
  [INO_PT] = "pt", [INO_NORMAL] = "normal", [INO_LATE] = "late",
  [INO_UNRULY] = "unruly", [INO_STATS] = "stats",
};

static int backing_fd = -1;
static off_t backing_size;
static const char *marker;
static uint32_t extra_flags;    /* -o: FOPEN_KEEP_CACHE (2), _DIRECT_IO (1) */
static struct passthrough_inode pinodes[INO_END];
static atomic_ulong reads[INO_END];
static atomic_ulong opens_pt[INO_END], opens_cached[INO_END];
static atomic_int lent;         /* late's lends not released yet */

/* The lend of late's backing file (a disk-cache pin, in the daemon). */
static void
late_lend_release (void *arg)
{
  atomic_fetch_sub (&lent, 1);
}

/* fh bit 0: the open is passthrough (so release knows). */
#define FH_PASSTHROUGH 1u

static void
fill_attr (fuse_ino_t ino, struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_nlink = 1;
  if (ino == INO_ROOT)
    {
      st->st_mode = S_IFDIR | 0755;
      st->st_nlink = 2;
    }
  else if (ino == INO_STATS)
    {
      st->st_mode = S_IFREG | 0444;
      st->st_size = 4096;
    }
  else
    {
      st->st_mode = S_IFREG | 0444;
      st->st_size = backing_size;
    }
}

static void
t_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct fuse_entry_param e;
  fuse_ino_t ino;

  if (parent != INO_ROOT)
    {
      fuse_reply_err (req, ENOENT);
      return;
    }
  for (ino = INO_PT; ino < INO_END; ino++)
    if (strcmp (names[ino], name) == 0)
      break;
  if (ino == INO_END)
    {
      fuse_reply_err (req, ENOENT);
      return;
    }
  memset (&e, 0, sizeof e);
  e.ino = ino;
  e.attr_timeout = 3600;
  e.entry_timeout = 3600;
  fill_attr (ino, &e.attr);
  fuse_reply_entry (req, &e);
}

static void
t_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct stat st;

  if (ino >= INO_END)
    {
      fuse_reply_err (req, ENOENT);
      return;
    }
  fill_attr (ino, &st);
  fuse_reply_attr (req, &st, ino == INO_STATS ? 0 : 3600);
}

static void
t_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
           struct fuse_file_info *fi)
{
  char buf[1024];
  size_t used = 0;
  struct stat st;
  fuse_ino_t i;

  if (ino != INO_ROOT)
    {
      fuse_reply_err (req, ENOTDIR);
      return;
    }
  for (i = INO_PT + (fuse_ino_t) off; i < INO_END; i++)
    {
      size_t n;

      fill_attr (i, &st);
      n = fuse_add_direntry (req, buf + used, sizeof buf - used, names[i],
                             &st, (off_t) (i - INO_PT + 1));
      if (used + n > size || used + n > sizeof buf)
        break;
      used += n;
    }
  fuse_reply_buf (req, buf, used);
}

static void
t_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  static const struct passthrough_lend late_lend = { late_lend_release,
                                                     NULL };
  const struct passthrough_lend *lend = NULL;
  uint32_t backing_id;
  int fd = -1;

  if (ino == INO_ROOT || ino >= INO_END)
    {
      fuse_reply_err (req, ino == INO_ROOT ? EISDIR : ENOENT);
      return;
    }
  if ((fi->flags & O_ACCMODE) != O_RDONLY)
    {
      fuse_reply_err (req, EROFS);
      return;
    }
  if (ino == INO_STATS)
    {
      fi->direct_io = 1;
      fuse_reply_open (req, fi);
      return;
    }
  if (ino == INO_PT || (ino == INO_LATE && access (marker, F_OK) == 0))
    fd = backing_fd;
  if (ino == INO_LATE && fd >= 0)
    {
      atomic_fetch_add (&lent, 1);
      lend = &late_lend;
    }
  if (ino == INO_UNRULY)
    {
      /* No bookkeeping: the registration is kept until unmount (the
       * kernel looks the id up after this reply, so it cannot be put
       * here). */
      if (access (marker, F_OK) == 0 && passthrough_enabled ()
          && passthrough_backing_get (backing_fd, &backing_id) == 0)
        {
          atomic_fetch_add (&opens_pt[ino], 1);
          passthrough_reply_open (req, 0, extra_flags, backing_id);
          return;
        }
    }
  else if (ino != INO_NORMAL
           && passthrough_inode_open (&pinodes[ino], fd, lend,
                                      extra_flags & 1, &backing_id))
    {
      atomic_fetch_add (&opens_pt[ino], 1);
      passthrough_reply_open (req, FH_PASSTHROUGH, extra_flags, backing_id);
      return;
    }
  atomic_fetch_add (&opens_cached[ino], 1);
  fi->fh = 0;
  fi->keep_cache = ino == INO_NORMAL || !(extra_flags & 1);
  fi->direct_io = ino != INO_NORMAL && (extra_flags & 1);
  fuse_reply_open (req, fi);
}

static void
t_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  if (ino == INO_PT || ino == INO_LATE)
    passthrough_inode_release (&pinodes[ino], fi->fh & FH_PASSTHROUGH,
                               extra_flags & 1);
  fuse_reply_err (req, 0);
}

/* The stats text. */
static size_t
stats_text (char *buf, size_t size)
{
  size_t n;
  fuse_ino_t i;

  n = (size_t) snprintf (buf, size, "passthrough %d\n",
                         passthrough_enabled ());
  for (i = INO_PT; i < INO_STATS && n < size; i++)
    {
      unsigned pt_now, cached_now;

      pthread_mutex_lock (&pinodes[i].lock);
      pt_now = pinodes[i].passthrough_opens;
      cached_now = pinodes[i].cached_opens;
      pthread_mutex_unlock (&pinodes[i].lock);
      n += (size_t) snprintf (buf + n, size - n, "reads %s %lu\nopens %s %lu"
                              " %lu\nopen-now %s %u %u\n", names[i],
                              atomic_load (&reads[i]), names[i],
                              atomic_load (&opens_pt[i]),
                              atomic_load (&opens_cached[i]), names[i],
                              pt_now, cached_now);
    }
  if (n < size)
    n += (size_t) snprintf (buf + n, size - n, "backing %u\nlent %d\n",
                            passthrough_backing_count (),
                            atomic_load (&lent));
  return n < size ? n : size;
}

static void
t_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
        struct fuse_file_info *fi)
{
  char *buf;
  ssize_t n;

  if (ino >= INO_END)
    {
      fuse_reply_err (req, EIO);
      return;
    }
  atomic_fetch_add (&reads[ino], 1);
  if (ino == INO_STATS)
    {
      char text[1024];
      size_t len = stats_text (text, sizeof text);

      if ((size_t) off >= len)
        fuse_reply_buf (req, NULL, 0);
      else
        fuse_reply_buf (req, text + off,
                        len - (size_t) off < size ? len - (size_t) off
                        : size);
      return;
    }
  buf = malloc (size ? size : 1);
  if (buf == NULL)
    {
      fuse_reply_err (req, ENOMEM);
      return;
    }
  n = pread (backing_fd, buf, size, off);
  if (n < 0)
    fuse_reply_err (req, errno);
  else
    fuse_reply_buf (req, buf, (size_t) n);
  free (buf);
}

/* Drop CAP_SYS_ADMIN from this thread's effective set (threads started
 * later inherit it).  0 or -1. */
static int
drop_sys_admin (void)
{
  struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct data[2];

  if (syscall (SYS_capget, &hdr, data) != 0)
    return -1;
  data[CAP_SYS_ADMIN / 32].effective &= ~(1u << (CAP_SYS_ADMIN % 32));
  return (int) syscall (SYS_capset, &hdr, data);
}

static const struct fuse_lowlevel_ops ops = {
  .lookup = t_lookup,
  .getattr = t_getattr,
  .readdir = t_readdir,
  .open = t_open,
  .release = t_release,
  .read = t_read,
};

int
main (int argc, char **argv)
{
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_loop_config *cfg;
  struct fuse_session *se;
  bool single = false;
  const char *drop = "";
  struct stat st;
  int i, r = 1;

  while (argc > 1 && argv[1][0] == '-')
    {
      if (strcmp (argv[1], "-s") == 0)
        single = true;
      else if (strcmp (argv[1], "-o") == 0 && argc > 2)
        {
          if (strcmp (argv[2], "keep_cache") == 0)
            extra_flags = 2;
          else if (strcmp (argv[2], "direct_io") == 0)
            extra_flags = 1;
          else
            break;
          argv++;
          argc--;
        }
      else if (strcmp (argv[1], "-c") == 0 && argc > 2)
        {
          drop = argv[2];
          argv++;
          argc--;
        }
      else
        break;
      argv++;
      argc--;
    }
  if (argc < 3 || argc > 4)
    {
      fprintf (stderr, "usage: pt_serve [-s] [-c before|after]"
               " [-o keep_cache|direct_io] BACKING MOUNTPOINT [MARKER]\n");
      return 2;
    }
  marker = argc == 4 ? argv[3] : "/nonexistent";
  backing_fd = open (argv[1], O_RDONLY | O_CLOEXEC);
  if (backing_fd < 0 || fstat (backing_fd, &st) != 0)
    {
      perror (argv[1]);
      return 1;
    }
  backing_size = st.st_size;
  for (i = INO_PT; i < INO_END; i++)
    passthrough_inode_init (&pinodes[i]);

  fuse_opt_add_arg (&args, "pt_serve");
  fuse_opt_add_arg (&args, "-o");
  fuse_opt_add_arg (&args, "fsname=pt_serve,ro,default_permissions");
  se = fuse_session_new (&args, &ops, sizeof ops, NULL);
  fuse_opt_free_args (&args);
  if (se == NULL)
    return 1;
  if (fuse_set_signal_handlers (se) != 0)
    goto out_destroy;
  if (fuse_session_mount (se, argv[2]) != 0)
    goto out_signals;
  if (strcmp (drop, "before") == 0 && drop_sys_admin () != 0)
    goto out_unmount;
  if (passthrough_negotiate (se) < 0)
    {
      fprintf (stderr, "pt_serve: %s\n", error_message ());
      goto out_unmount;
    }
  if (strcmp (drop, "after") == 0 && drop_sys_admin () != 0)
    goto out_unmount;
  printf ("ready passthrough=%d\n", passthrough_enabled ());
  fflush (stdout);
  if (single)
    r = fuse_session_loop (se);
  else
    {
      cfg = fuse_loop_cfg_create ();
      fuse_loop_cfg_set_clone_fd (cfg, 0);
      fuse_loop_cfg_set_max_threads (cfg, 64);
      fuse_loop_cfg_set_idle_threads (cfg, 16);
      r = fuse_session_loop_mt (se, cfg);
      fuse_loop_cfg_destroy (cfg);
    }
  r = r < 0 ? 1 : 0;
 out_unmount:
  fuse_session_unmount (se);
 out_signals:
  fuse_remove_signal_handlers (se);
 out_destroy:
  fuse_session_destroy (se);
  for (i = INO_PT; i < INO_END; i++)
    passthrough_inode_destroy (&pinodes[i]);
  close (backing_fd);
  return r;
}
