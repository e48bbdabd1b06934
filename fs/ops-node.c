/* diskshelf: the FUSE requests on names and attributes (see ops.h).
 *
 * A name resolves in the current tree when it is looked up; the inode
 * it answers with is its entry version's (nodes.h), so everything asked
 * of that inode afterwards answers from that version, whatever the name
 * means by then. */
#include "ops.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "nodes.h"
#include "perm.h"

/* Join a directory path and a name ("/" + "a" is "/a"); NULL when the
 * result would be too long. */
static char *
join (const char *dir, const char *name)
{
  char *path;

  if (strlen (name) > 255
      || asprintf (&path, "%s/%s", strcmp (dir, "/") == 0 ? "" : dir,
                   name) < 0)
    return NULL;
  return path;
}

/* What a path names in the current tree: 0 and a referenced *entry for
 * a listed file, 1 for a directory, -ENOENT for nothing (a broken entry
 * is left out until a retry opens it). */
static int
resolve (struct daemon *d, const char *path, struct fs_entry **entry)
{
  struct fs_node *n;
  int r;

  *entry = NULL;
  pthread_rwlock_rdlock (&d->tree_lock);
  n = fs_tree_lookup (d->tree, path);
  r = n == NULL ? -ENOENT : n->entry ? 0 : 1;
  if (r == 0 && !fs_entry_listed (n->entry))
    r = -ENOENT;
  if (r == 0)
    {
      fs_entry_ref (n->entry);
      *entry = n->entry;
    }
  pthread_rwlock_unlock (&d->tree_lock);
  return r;
}

void
ops_entry_stat (struct daemon *d, struct fs_entry *e, struct stat *st)
{
  uint64_t size = fs_entry_size (e);

  memset (st, 0, sizeof *st);
  st->st_ino = (ino_t) e->ino;
  st->st_mode = S_IFREG | (fs_entry_writable (e) ? 0644 : 0444);
  st->st_nlink = 1;
  st->st_size = (off_t) size;
  st->st_blksize = 4096;
  st->st_blocks = (blkcnt_t) ((size + 511) / 512);
  st->st_mtim = e->mtime;
  st->st_ctim = e->mtime;
  st->st_atim = e->mtime;
  fs_entry_ownership (d, e, st);
}

void
ops_dir_stat (struct daemon *d, uint64_t ino, struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = (ino_t) ino;
  st->st_mode = S_IFDIR | 0755;
  st->st_nlink = 2;
  st->st_mtim = d->started;
  st->st_ctim = d->started;
  st->st_atim = d->started;
  st->st_uid = d->uid;
  st->st_gid = d->gid;
}

void
ops_status_stat (struct daemon *d, struct stat *st)
{
  size_t len = 0;

  free (ops_status_text (d, &len));
  memset (st, 0, sizeof *st);
  st->st_ino = NODES_STATUS_INO;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_uid = d->uid;
  st->st_gid = d->gid;
  st->st_size = (off_t) len;
}

/* lookup: a name in a directory, counted on the inode it answers with. */
void
ops_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct daemon *d = ops_daemon (req);
  struct fuse_entry_param ep = {
    .generation = NODES_GENERATION,
    .attr_timeout = OPS_TIMEOUT_S,
    .entry_timeout = OPS_TIMEOUT_S,
  };
  const char *dir = nodes_dir_path (parent);
  struct fs_entry *e;
  char *path;
  int r;

  if (dir == NULL)
    {
      fuse_reply_err (req, nodes_file_entry (parent) ? ENOTDIR : ENOENT);
      return;
    }
  if (parent == NODES_ROOT_INO && strcmp (name, STATUS_FILE_NAME) == 0)
    {
      ep.ino = NODES_STATUS_INO;
      ops_status_stat (d, &ep.attr);
      fuse_reply_entry (req, &ep);
      return;
    }
  path = join (dir, name);
  if (path == NULL)
    {
      fuse_reply_err (req, ENAMETOOLONG);
      return;
    }
  r = resolve (d, path, &e);
  if (r == 0)
    {
      if (nodes_file_looked_up (e) < 0)
        r = -ENOMEM;
      else
        {
          ep.ino = e->ino;
          ops_entry_stat (d, e, &ep.attr);
        }
      fs_entry_unref (e);
    }
  else if (r == 1)
    {
      ep.ino = nodes_dir_ino (path);
      if (ep.ino == 0)
        r = -ENOMEM;
      else
        ops_dir_stat (d, ep.ino, &ep.attr);
    }
  free (path);
  if (r < 0)
    fuse_reply_err (req, -r);
  else if (fuse_reply_entry (req, &ep) != 0 && r == 0)
    nodes_forget (ep.ino, 1);   /* the kernel did not take it */
}

/* forget: the kernel dropped lookups of an inode. */
void
ops_forget (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
  nodes_forget (ino, nlookup);
  fuse_reply_none (req);
}

void
ops_forget_multi (fuse_req_t req, size_t count,
                  struct fuse_forget_data *forgets)
{
  for (size_t i = 0; i < count; i++)
    nodes_forget (forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none (req);
}

/* The attributes of an inode: 0, or a negative errno. */
static int
inode_stat (struct daemon *d, fuse_ino_t ino, struct fuse_file_info *fi,
            struct stat *st)
{
  struct open_file *of = fi ? ops_file (fi) : NULL;
  struct fs_entry *e;
  const char *dir;

  if (of && of->entry)
    {
      ops_entry_stat (d, of->entry, st);
      return 0;
    }
  if (ino == NODES_STATUS_INO)
    {
      ops_status_stat (d, st);
      return 0;
    }
  e = nodes_file_entry (ino);
  if (e)
    {
      /* A broken entry is left out of the mount (but an open file on
       * it, above, still answers). */
      bool listed = fs_entry_listed (e);
      if (listed)
        ops_entry_stat (d, e, st);
      fs_entry_unref (e);
      return listed ? 0 : -ENOENT;
    }
  dir = nodes_dir_path (ino);
  if (dir == NULL)
    return -ESTALE;
  /* A directory the catalog no longer has is gone. */
  if (ino != NODES_ROOT_INO && resolve (d, dir, &e) != 1)
    {
      fs_entry_unref (e);
      return -ENOENT;
    }
  ops_dir_stat (d, ino, st);
  return 0;
}

/* getattr: files from their entry version, directories from the tree. */
void
ops_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct stat st;
  int r = inode_stat (ops_daemon (req), ino, fi, &st);

  if (r < 0)
    fuse_reply_err (req, -r);
  else
    fuse_reply_attr (req, &st, OPS_TIMEOUT_S);
}

/* setattr: a truncate only to the current size (an image's size is
 * fixed); times are accepted and ignored, so `touch` and `cp -p` work;
 * mode and owner cannot be changed. */
void
ops_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr,
             int to_set, struct fuse_file_info *fi)
{
  struct stat st;
  int r = inode_stat (ops_daemon (req), ino, fi, &st);

  if (r == 0 && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID
                           | FUSE_SET_ATTR_GID)))
    r = -ENOSYS;
  if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE))
    {
      if (S_ISDIR (st.st_mode))
        r = -EISDIR;
      else if (!(st.st_mode & 0200))
        r = -EROFS;
      else if (attr->st_size != st.st_size)
        r = -EPERM;
    }
  if (r < 0)
    fuse_reply_err (req, -r);
  else
    fuse_reply_attr (req, &st, OPS_TIMEOUT_S);
}

/* Free an open directory's listing. */
static void
free_rows (struct open_file *of)
{
  for (size_t i = 0; i < of->nrows; i++)
    {
      free (of->rows[i].name);
      fs_entry_unref (of->rows[i].entry);
    }
  free (of->rows);
  of->rows = NULL;
  of->nrows = 0;
}

/* Take the listing of an open directory from the current tree: ".",
 * "..", then the listed children.  0, or a negative errno. */
static int
list_dir (struct daemon *d, struct open_file *of, fuse_ino_t ino)
{
  struct fs_tree *t = ops_current_tree (d);
  struct fs_node *n = fs_tree_lookup (t, of->dir_path);
  int r = 0;

  free_rows (of);
  if (n == NULL || n->entry)
    {
      fs_tree_unref (t);
      return n ? -ENOTDIR : -ENOENT;
    }
  of->rows = calloc (n->nchildren + 2, sizeof *of->rows);
  if (of->rows == NULL)
    r = -ENOMEM;
  for (size_t i = 0; r == 0 && i < n->nchildren + 2; i++)
    {
      struct fs_node *c = i >= 2 ? n->children[i - 2] : NULL;
      struct dir_row *row = &of->rows[of->nrows];
      char *path = NULL;

      if (c && c->entry && !fs_entry_listed (c->entry))
        continue;
      row->name = strdup (c ? c->name : i == 0 ? "." : "..");
      row->type = c && c->entry ? S_IFREG : S_IFDIR;
      if (c && c->entry)
        {
          row->ino = c->entry->ino;
          row->entry = c->entry;
          fs_entry_ref (c->entry);
        }
      else if (c)
        {
          path = join (of->dir_path, c->name);
          row->ino = path ? nodes_dir_ino (path) : 0;
          free (path);
        }
      else
        row->ino = ino;   /* ".." shows the directory's own number too */
      if (row->name == NULL || row->ino == 0)
        {
          free (row->name);
          fs_entry_unref (row->entry);
          row->entry = NULL;
          r = -ENOMEM;
        }
      else
        of->nrows++;
    }
  fs_tree_unref (t);
  if (r < 0)
    free_rows (of);
  return r;
}

/* opendir: remember which directory; it is listed at offset 0. */
void
ops_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  const char *dir = nodes_dir_path (ino);
  struct open_file *of;

  if (dir == NULL)
    {
      fuse_reply_err (req, ENOTDIR);
      return;
    }
  of = calloc (1, sizeof *of);
  if (of == NULL || (of->dir_path = strdup (dir)) == NULL)
    {
      free (of);
      fuse_reply_err (req, ENOMEM);
      return;
    }
  ops_track_open_file (of);
  fi->fh = (uintptr_t) of;
  if (fuse_reply_open (req, fi) != 0)
    ops_free_open_file (of);
}

/* readdir: the rows from off on, as many as fit in size.  Offset 0
 * (a new listing or a rewind) lists the current tree again. */
void
ops_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
             struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);
  char *buf;
  size_t used = 0;
  int r;

  if (off == 0 && (r = list_dir (ops_daemon (req), of, ino)) < 0)
    {
      fuse_reply_err (req, -r);
      return;
    }
  buf = malloc (size ? size : 1);
  if (buf == NULL)
    {
      fuse_reply_err (req, ENOMEM);
      return;
    }
  for (size_t i = off < 0 ? of->nrows : (size_t) off; i < of->nrows; i++)
    {
      struct stat st = {
        .st_ino = (ino_t) of->rows[i].ino,
        .st_mode = of->rows[i].type,
      };
      size_t need = fuse_add_direntry (req, buf + used, size - used,
                                       of->rows[i].name, &st,
                                       (off_t) (i + 1));
      if (need > size - used)
        break;
      used += need;
    }
  fuse_reply_buf (req, buf, used);
  free (buf);
}

/* readdirplus: readdir with each row's attributes, which the kernel
 * takes as a lookup of every row but "." and ".." (counted here, and
 * uncounted again for rows that did not fit or a reply that did not
 * reach the kernel).  A file row whose entry broke since the listing
 * goes without attributes (inode 0), so the kernel looks it up. */
void
ops_readdirplus (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
  struct daemon *d = ops_daemon (req);
  struct open_file *of = ops_file (fi);
  size_t first = off < 0 ? SIZE_MAX : (size_t) off, i;
  char *buf;
  size_t used = 0;
  int r;

  if (off == 0 && (r = list_dir (d, of, ino)) < 0)
    {
      fuse_reply_err (req, -r);
      return;
    }
  buf = malloc (size ? size : 1);
  if (buf == NULL)
    {
      fuse_reply_err (req, ENOMEM);
      return;
    }
  for (i = first; i < of->nrows; i++)
    {
      struct dir_row *row = &of->rows[i];
      struct fuse_entry_param ep = {
        .generation = NODES_GENERATION,
        .attr_timeout = OPS_TIMEOUT_S,
        .entry_timeout = OPS_TIMEOUT_S,
      };
      size_t need;

      row->counted = false;
      if (row->entry)
        {
          if (fs_entry_listed (row->entry)
              && nodes_file_looked_up (row->entry) == 0)
            {
              row->counted = true;
              ep.ino = row->ino;
              ops_entry_stat (d, row->entry, &ep.attr);
            }
          else
            {
              ep.attr.st_ino = (ino_t) row->ino;
              ep.attr.st_mode = S_IFREG;
            }
        }
      else
        {
          ep.ino = row->ino;
          ops_dir_stat (d, row->ino, &ep.attr);
        }
      need = fuse_add_direntry_plus (req, buf + used, size - used, row->name,
                                     &ep, (off_t) (i + 1));
      if (need > size - used)
        {
          if (row->counted)
            nodes_forget (row->ino, 1);
          break;
        }
      used += need;
    }
  if (fuse_reply_buf (req, buf, used) != 0)
    for (size_t j = first; j < i; j++)
      if (of->rows[j].counted)
        nodes_forget (of->rows[j].ino, 1);
  free (buf);
}

/* releasedir: forget the directory and its listing. */
void
ops_releasedir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct open_file *of = ops_file (fi);

  free_rows (of);
  ops_free_open_file (of);
  fuse_reply_err (req, 0);
}

/* Add an entry's size (as getattr shows it) to a total. */
static void
add_size (struct fs_entry *e, void *arg)
{
  *(uint64_t *) arg += fs_entry_size (e);
}

/* statfs: the catalog's totals. */
void
ops_statfs (fuse_req_t req, fuse_ino_t ino)
{
  struct daemon *d = ops_daemon (req);
  struct fs_tree *t = ops_current_tree (d);
  struct statvfs sv;
  uint64_t total = 0;

  fs_tree_for_each_entry (t, add_size, &total);
  memset (&sv, 0, sizeof sv);
  sv.f_bsize = 4096;
  sv.f_frsize = 4096;
  sv.f_blocks = (fsblkcnt_t) ((total + 4095) / 4096);
  sv.f_files = (fsfilcnt_t) t->entry_count;
  sv.f_namemax = 255;
  fs_tree_unref (t);
  fuse_reply_statfs (req, &sv);
}

/* unlink, rename: the catalog decides what exists. */
void
ops_unlink (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  fuse_reply_err (req, EROFS);
}

void
ops_rename (fuse_req_t req, fuse_ino_t parent, const char *name,
            fuse_ino_t newparent, const char *newname, unsigned int flags)
{
  fuse_reply_err (req, EROFS);
}
