/* diskshelf: the directory tree the mount shows, built from the catalog.
 *
 * A tree maps paths ("a/b.img") to served entries.  Entries are
 * reference-counted: the tree holds one reference, and every open file
 * holds one, so an entry removed by a catalog reload keeps working for
 * the files already open and is closed when the last one is released.
 *
 * Thread model: a tree is immutable once built; the daemon swaps whole
 * trees (fs_tree_swap) under its own lock.  fs_entry reference counts
 * are atomic.  last_error is protected by lock.
 *
 * Ownership: fs_tree_build returns a tree freed by fs_tree_unref.
 */
#ifndef DISKSHELF_FS_TREE_H
#define DISKSHELF_FS_TREE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "catalog.h"
#include "layer.h"
#include "stack.h"

struct catalog;

/* One served file: a parsed entry and its open stack. */
struct fs_entry
{
  unsigned refs;                  /* atomic */
  struct entry_config *config;    /* owned */
  char *conf_text;                /* the .conf file's bytes, to spot edits */
  struct layer *stack;            /* owned; never NULL */
  struct timespec mtime;          /* of the .conf file */
  pthread_mutex_t lock;
  char *open_error;               /* why the stack did not open; owned */
  char *last_error;               /* protected by lock; owned, whole */
  time_t last_error_time;         /* protected by lock; wall clock */
  unsigned long long errors;      /* protected by lock */
};

struct fs_node
{
  char *name;                     /* one path component; "" for the root */
  struct fs_node **children;      /* for directories, sorted by name */
  size_t nchildren;
  struct fs_entry *entry;         /* for files; one reference owned */
};

struct fs_tree
{
  unsigned refs;                  /* atomic */
  struct fs_node *root;
  size_t entry_count;
  size_t broken_count;            /* entries left out at the last build */
  char *broken;                   /* their "FILE:LINE: reason\n" rows */
  uint64_t total_size;
};

/* Build a tree from a parsed catalog.  Entries whose config text is the
 * same as in `previous` (may be NULL) are shared instead of reopened;
 * new ones are opened in parallel.  A stack that fails to open is logged
 * and left out.  Takes ownership of the catalog's entries. */
int fs_tree_build (struct catalog *catalog, struct fs_tree *previous,
                   const struct stack_context *base, struct fs_tree **out);

/* Find the node for an absolute path ("/a/b.img"), or NULL. */
struct fs_node *fs_tree_lookup (struct fs_tree *tree, const char *path);

void fs_tree_ref (struct fs_tree *tree);
void fs_tree_unref (struct fs_tree *tree);

void fs_entry_ref (struct fs_entry *e);
void fs_entry_unref (struct fs_entry *e);

/* Remember the last error of an entry (for status) and log it. */
void fs_entry_record_error (struct fs_entry *e, const char *what);

/* Call fn on every entry of the tree, in path order. */
void fs_tree_for_each_entry (struct fs_tree *tree,
                             void (*fn) (struct fs_entry *e, void *arg),
                             void *arg);

/* Write the status of every entry in the tree. */
void fs_tree_status (struct fs_tree *tree, FILE *out);

#endif
