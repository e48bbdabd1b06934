/* diskshelf: what the FUSE operations (fs/ops*.c) share; private to them.
 *
 * The mount speaks libfuse's low-level API: requests name inodes
 * (nodes.h), not paths.  ops-node.c answers the requests on names and
 * attributes (lookup, forget, getattr, setattr, directories, statfs),
 * ops-file.c those on open files (open, read, write, ...), ops.c the
 * session (init, destroy, notifications) and the operations table.
 *
 * Thread model: any FUSE thread calls any operation; open files are
 * tracked under a mutex in ops-file.c, the tree is read under the
 * daemon's tree_lock.
 */
#ifndef DISKSHELF_FS_OPS_H
#define DISKSHELF_FS_OPS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <stdbool.h>
#include <sys/stat.h>

#include "daemon.h"
#include "tree.h"

/* Attributes and names stay cached in the kernel this long (s). */
#define OPS_TIMEOUT_S 1.0

/* One directory row an open directory lists. */
struct dir_row
{
  char *name;
  uint64_t ino;
  mode_t type;            /* S_IFDIR or S_IFREG */
  struct fs_entry *entry; /* files: one reference (readdirplus) */
  bool counted;           /* readdirplus: a lookup counted for the
                             reply being built */
};

/* What an open file handle points at. */
struct open_file
{
  struct fs_entry *entry;   /* one reference; NULL for the status file
                               and directories */
  char *status_text;        /* snapshot for the status file */
  size_t status_len;
  char *dir_path;           /* for an open directory; owned */
  struct dir_row *rows;     /* its listing, taken at offset 0; owned */
  size_t nrows;
  bool direct;              /* opened with O_DIRECT: I/O must be aligned */
  bool io_mode_counted;     /* counted in entry->passthrough (hooks.h) */
  bool passthrough;         /* the kernel reads a backing file itself */
  struct open_file *prev, *next;   /* protected by open_files_lock */
};

/* The daemon a request is for. */
struct daemon *ops_daemon (fuse_req_t req);

/* While hold is true, notifications to the kernel (name and attribute
 * invalidations) are not sent: INIT is being answered through a
 * stand-in fd (fs/passthrough.c).  Releasing starts them if init ran. */
void ops_hold_notifications (bool hold);

/* The current tree, with a reference the caller drops. */
struct fs_tree *ops_current_tree (struct daemon *d);

/* Remember a new open file, or free one (forgetting it). */
void ops_track_open_file (struct open_file *of);
void ops_free_open_file (struct open_file *of);

/* The open file behind fi. */
static inline struct open_file *
ops_file (struct fuse_file_info *fi)
{
  return (struct open_file *) (uintptr_t) fi->fh;
}

/* The attributes of a file entry, of a directory, of the status file. */
void ops_entry_stat (struct daemon *d, struct fs_entry *e, struct stat *st);
void ops_dir_stat (struct daemon *d, uint64_t ino, struct stat *st);
void ops_status_stat (struct daemon *d, struct stat *st);

/* The hidden status file's text, malloc'd; NULL when out of memory. */
char *ops_status_text (struct daemon *d, size_t *len);

/* Record and log a layer error; returns the negative errno to answer. */
int ops_entry_failed (struct fs_entry *e, int r, const char *op);

/* The operations, by file. */
void ops_lookup (fuse_req_t req, fuse_ino_t parent, const char *name);
void ops_forget (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void ops_forget_multi (fuse_req_t req, size_t count,
                       struct fuse_forget_data *forgets);
void ops_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                  int to_set, struct fuse_file_info *fi);
void ops_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                  struct fuse_file_info *fi);
void ops_readdirplus (fuse_req_t req, fuse_ino_t ino, size_t size,
                      off_t off, struct fuse_file_info *fi);
void ops_releasedir (fuse_req_t req, fuse_ino_t ino,
                     struct fuse_file_info *fi);
void ops_statfs (fuse_req_t req, fuse_ino_t ino);
void ops_unlink (fuse_req_t req, fuse_ino_t parent, const char *name);
void ops_rename (fuse_req_t req, fuse_ino_t parent, const char *name,
                 fuse_ino_t newparent, const char *newname,
                 unsigned int flags);

void ops_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
               struct fuse_file_info *fi);
void ops_write (fuse_req_t req, fuse_ino_t ino, const char *buf,
                size_t size, off_t off, struct fuse_file_info *fi);
void ops_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
                struct fuse_file_info *fi);
void ops_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                    off_t length, struct fuse_file_info *fi);
void ops_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                struct fuse_file_info *fi);
void ops_ioctl (fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                struct fuse_file_info *fi, unsigned flags,
                const void *in_buf, size_t in_bufsz, size_t out_bufsz);

#endif
