/* diskshelf: the directory tree the mount shows, built from the catalog.
 *
 * A tree maps paths ("a/b.img") to served entries.  Entries are
 * reference-counted: the tree holds one reference, and every open file
 * holds one, so an entry removed by a catalog reload keeps working for
 * the files already open and is closed when the last one is released.
 *
 * Entries are opened in the background by the opener pool (opener.h):
 * a tree lists every entry at once, each in one of three states.
 * OPENING: its first open is under way; it answers getattr with size 0.
 * OK: its size is known, learnt by an open or remembered in the disk
 * cache; its stack is open once a file was opened on it (stack set),
 * else it holds nothing but its config.
 * BROKEN: its last open failed (open_error says why); it is left out of
 * the mount (lookups and readdir skip it) but kept in the tree and in
 * status; the opener retries it with back-off, and a successful retry
 * makes it OK, and visible again, in place.
 *
 * Thread model: a tree is immutable once built; the daemon swaps whole
 * trees (fs_tree_swap) under its own lock.  fs_entry reference counts
 * are atomic.  The stack pointer is set once, by the opener, and read
 * with fs_entry_stack (never NULL after that).  state, the known_*
 * facts, use_pending, open_error, attempts, last_error and the error
 * counts are protected by lock.
 *
 * Ownership: fs_tree_build returns a tree freed by fs_tree_unref.
 */
#ifndef DISKSHELF_FS_TREE_H
#define DISKSHELF_FS_TREE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "catalog.h"
#include "layer.h"
#include "passthrough.h"
#include "stack.h"

struct catalog;

enum fs_entry_state
{
  FS_ENTRY_OPENING,
  FS_ENTRY_OK,
  FS_ENTRY_BROKEN,
};

/* One served file: a parsed entry and its stack, open or not yet. */
struct fs_entry
{
  unsigned refs;                  /* atomic */
  uint64_t ino;                   /* the inode the mount shows for this
                                     version (nodes.h); set at creation */
  struct entry_config *config;    /* owned */
  char *conf_text;                /* the .conf file's bytes, to spot edits */
  struct layer *stack;            /* owned; NULL until open: read it with
                                     fs_entry_stack */
  struct timespec mtime;          /* of the .conf file */
  const struct stack_context *base;  /* borrowed from the daemon */
  /* What getattr shows: learnt by the last open, or remembered by the
   * disk cache (disk_cache_recall_entry); protected by lock. */
  bool known;
  uint64_t known_size;
  bool known_writable;
  bool known_keep_open;           /* opened at mount even when known */
  char known_stack[128];
  pthread_mutex_t lock;
  bool use_pending;               /* an open for use is queued; lock */
  struct layer *spare;            /* a stack opened to learn the size,
                                     kept a while for a first use
                                     (opener.h); lock; owned */
  pthread_cond_t settled;         /* state changed or an attempt ended */
  enum fs_entry_state state;      /* protected by lock */
  unsigned attempts;              /* failed opens; protected by lock */
  char *open_error;               /* why the last open failed; protected
                                     by lock; owned */
  char *last_error;               /* protected by lock; owned, whole */
  time_t last_error_time;         /* protected by lock; wall clock */
  unsigned long long errors;      /* protected by lock */
  /* FUSE passthrough (fs/hooks.c): this inode's io mode, its opens
   * answered with a backing file, and the READs that reached the
   * stack (for status and tests). */
  struct passthrough_inode passthrough;
  uint64_t passthrough_opens;
  uint64_t reads;
  /* Bytes READs asked for through the page cache (not O_DIRECT) since
   * the kernel last dropped this inode's pages, or a READ showed it had
   * (fs_count_page_cache_bytes): once it reaches the size, the mount's
   * page cache likely holds the whole image (atomic; fs/hooks.c). */
  uint64_t bytes_to_page_cache;
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
  size_t entry_count;             /* entries listed, in any state */
  size_t broken_count;            /* entries left out (bad .conf) */
  char *broken;                   /* their "FILE:LINE: reason\n" rows */
};

/* Build a tree from a parsed catalog.  Entries whose config text is the
 * same as in `previous` (may be NULL) are shared instead of reopened;
 * new ones are handed to the opener pool, and the build waits at most
 * wait_ms for those whose size the disk cache does not remember.  An
 * entry whose .conf fails the static checks is logged and left out.
 * Takes ownership of the catalog's entries. */
int fs_tree_build (struct catalog *catalog, struct fs_tree *previous,
                   const struct stack_context *base, unsigned wait_ms,
                   struct fs_tree **out);

/* The open stack, or NULL while the entry is opening or broken. */
struct layer *fs_entry_stack (struct fs_entry *e);

/* Whether lookups and readdir show the entry (it is not broken). */
bool fs_entry_listed (struct fs_entry *e);

/* What getattr shows: the values the last open learnt, else the
 * remembered ones, else 0 and read-only. */
uint64_t fs_entry_size (struct fs_entry *e);
bool fs_entry_writable (struct fs_entry *e);

/* Open the entry's stack for use if it is not open yet, and wait for
 * it: 0, or -EIO with a message when the open failed or did not finish
 * within timeout_ms.  A broken entry gets one fresh attempt
 * (opener_retry_now) that this call waits for. */
int fs_entry_wait_open (struct fs_entry *e, unsigned timeout_ms);

/* Counts of the tree's entries by state (any pointer may be NULL). */
void fs_tree_count_states (struct fs_tree *tree, size_t *ok,
                           size_t *opening, size_t *broken);

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
