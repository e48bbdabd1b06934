/* diskshelf: building the mount's directory tree and opening entries. */
#include "tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "diskcache.h"
#include "entry.h"
#include "entry_checks.h"
#include "error.h"
#include "nodes.h"
#include "opener.h"
#include "text.h"

/* Read a whole small file into a malloc'd NUL-terminated string. */
static char *
read_text (const char *path, struct timespec *mtime)
{
  FILE *fp = fopen (path, "re");
  char *text = NULL;
  size_t len = 0;
  struct stat st;

  if (fp == NULL)
    return NULL;
  if (fstat (fileno (fp), &st) == 0)
    *mtime = st.st_mtim;
  FILE *mem = open_memstream (&text, &len);
  if (mem)
    {
      char buf[4096];
      size_t n;
      while ((n = fread (buf, 1, sizeof buf, fp)) > 0)
        fwrite (buf, 1, n, mem);
      fclose (mem);
    }
  fclose (fp);
  return text;
}

/* Take a reference on an entry. */
void
fs_entry_ref (struct fs_entry *e)
{
  __atomic_add_fetch (&e->refs, 1, __ATOMIC_ACQ_REL);
}

/* Drop a reference; the last one closes the stack. */
void
fs_entry_unref (struct fs_entry *e)
{
  if (e == NULL || __atomic_sub_fetch (&e->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  if (e->stack)
    {
      log_info ("%s: closed", e->config->name);
      layer_close (e->stack);
    }
  fs_entry_drop_spare (e);
  entry_free (e->config);
  free (e->conf_text);
  free (e->open_error);
  free (e->last_error);
  pthread_mutex_destroy (&e->lock);
  pthread_cond_destroy (&e->settled);
  passthrough_inode_destroy (&e->passthrough);
  free (e);
}

/* Keep the last error of an entry and log it. */
void
fs_entry_record_error (struct fs_entry *e, const char *what)
{
  char *copy = strdup (what);

  pthread_mutex_lock (&e->lock);
  if (copy)
    {
      free (e->last_error);
      e->last_error = copy;
    }
  e->last_error_time = time (NULL);
  e->errors++;
  pthread_mutex_unlock (&e->lock);
  log_error ("%s: %s", e->config->name, what);
}

/* Free a node and its subtree, dropping entry references. */
static void
free_node (struct fs_node *n)
{
  if (n == NULL)
    return;
  for (size_t i = 0; i < n->nchildren; i++)
    free_node (n->children[i]);
  free (n->children);
  if (n->entry)
    fs_entry_unref (n->entry);
  free (n->name);
  free (n);
}

/* The child of dir called name (length len), or NULL. */
static struct fs_node *
find_child (struct fs_node *dir, const char *name, size_t len)
{
  for (size_t i = 0; i < dir->nchildren; i++)
    if (strlen (dir->children[i]->name) == len
        && memcmp (dir->children[i]->name, name, len) == 0)
      return dir->children[i];
  return NULL;
}

/* Make a new child node of dir. */
static struct fs_node *
add_child (struct fs_node *dir, const char *name, size_t len)
{
  struct fs_node *n = calloc (1, sizeof *n);
  struct fs_node **grown;

  if (n == NULL || (n->name = strndup (name, len)) == NULL)
    {
      free (n);
      return NULL;
    }
  grown = realloc (dir->children, (dir->nchildren + 1) * sizeof *grown);
  if (grown == NULL)
    {
      free (n->name);
      free (n);
      return NULL;
    }
  dir->children = grown;
  dir->children[dir->nchildren++] = n;
  return n;
}

/* Place an entry at its path, making directories on the way. */
static int
insert_entry (struct fs_tree *tree, struct fs_entry *e)
{
  const char *p = e->config->name;
  struct fs_node *dir = tree->root;

  for (;;)
    {
      const char *slash = strchr (p, '/');
      size_t len = slash ? (size_t) (slash - p) : strlen (p);
      struct fs_node *child = find_child (dir, p, len);

      if (slash == NULL)
        {
          if (child)
            return error_set (EEXIST, "%s: a directory of the same name"
                              " exists", e->config->conf_path);
          child = add_child (dir, p, len);
          if (child == NULL)
            return error_set (ENOMEM, "out of memory");
          child->entry = e;
          return 0;
        }
      if (child && child->entry)
        return error_set (EEXIST, "%s: an entry '%.*s' stands where a"
                          " directory is needed", e->config->conf_path,
                          (int) (slash - e->config->name),
                          e->config->name);
      if (child == NULL)
        child = add_child (dir, p, len);
      if (child == NULL)
        return error_set (ENOMEM, "out of memory");
      dir = child;
      p = slash + 1;
    }
}

/* Sort children by name recursively, so readdir is stable. */
static int
compare_nodes (const void *a, const void *b)
{
  const struct fs_node *const *x = a, *const *y = b;
  return strcmp ((*x)->name, (*y)->name);
}

static void
sort_tree (struct fs_node *n)
{
  if (n->nchildren > 1)
    qsort (n->children, n->nchildren, sizeof *n->children, compare_nodes);
  for (size_t i = 0; i < n->nchildren; i++)
    sort_tree (n->children[i]);
}

/* The open stack, or NULL. */
struct layer *
fs_entry_stack (struct fs_entry *e)
{
  return __atomic_load_n (&e->stack, __ATOMIC_ACQUIRE);
}

/* Whether the mount shows the entry: open or opening, not broken. */
bool
fs_entry_listed (struct fs_entry *e)
{
  bool listed;

  if (fs_entry_stack (e))
    return true;
  pthread_mutex_lock (&e->lock);
  listed = e->state != FS_ENTRY_BROKEN;
  pthread_mutex_unlock (&e->lock);
  return listed;
}

/* Size for getattr: the last open's, else the remembered one. */
uint64_t
fs_entry_size (struct fs_entry *e)
{
  uint64_t size;

  pthread_mutex_lock (&e->lock);
  size = e->known ? e->known_size : 0;
  pthread_mutex_unlock (&e->lock);
  return size;
}

/* Writability for getattr: the last open's, else the remembered one. */
bool
fs_entry_writable (struct fs_entry *e)
{
  bool writable;

  pthread_mutex_lock (&e->lock);
  writable = e->known && e->known_writable;
  pthread_mutex_unlock (&e->lock);
  return writable;
}

/* An absolute CLOCK_REALTIME time ms from now, for timed waits. */
static struct timespec
deadline_after (unsigned ms)
{
  struct timespec t;

  clock_gettime (CLOCK_REALTIME, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (long) (ms % 1000) * 1000000;
  if (t.tv_nsec >= 1000000000)
    {
      t.tv_sec++;
      t.tv_nsec -= 1000000000;
    }
  return t;
}

/* Open the stack for use and wait for it; a broken entry gets one
 * fresh attempt. */
int
fs_entry_wait_open (struct fs_entry *e, unsigned timeout_ms)
{
  struct timespec until = deadline_after (timeout_ms);
  bool asked = false;
  unsigned attempts;
  int r = 0;

  if (fs_entry_stack (e))
    return 0;
  pthread_mutex_lock (&e->lock);
  attempts = e->attempts;
  while (e->stack == NULL)
    {
      if (e->state == FS_ENTRY_BROKEN && asked && e->attempts != attempts)
        {
          r = error_set (EIO, "%s: cannot open: %s", e->config->name,
                         e->open_error ? e->open_error : "unknown error");
          break;
        }
      if (e->state == FS_ENTRY_BROKEN && !asked)
        {
          /* Its next retry, now rather than after the back-off. */
          asked = true;
          pthread_mutex_unlock (&e->lock);
          opener_retry_now (e);
          pthread_mutex_lock (&e->lock);
          continue;
        }
      if (e->state == FS_ENTRY_OK && e->spare)
        {
          /* Opened moments ago to learn its size: use that stack. */
          __atomic_store_n (&e->stack, e->spare, __ATOMIC_RELEASE);
          e->spare = NULL;
          opener_spare_taken ();
          break;
        }
      if (e->state == FS_ENTRY_OK && !e->use_pending)
        {
          asked = true;
          attempts = e->attempts;
          e->use_pending = true;
          pthread_mutex_unlock (&e->lock);
          opener_submit (e, true);
          pthread_mutex_lock (&e->lock);
          continue;
        }
      if (pthread_cond_timedwait (&e->settled, &e->lock, &until) == ETIMEDOUT
          && e->stack == NULL)
        {
          r = error_set (EIO, "%s: still opening after %u ms%s%s",
                         e->config->name, timeout_ms,
                         e->open_error ? "; last error: " : "",
                         e->open_error ? e->open_error : "");
          break;
        }
    }
  pthread_mutex_unlock (&e->lock);
  return r;
}

/* Wait until a new entry's first open ended or the deadline passed. */
static void
wait_first_open (struct fs_entry *e, const struct timespec *until)
{
  pthread_mutex_lock (&e->lock);
  while (e->state == FS_ENTRY_OPENING)
    if (pthread_cond_timedwait (&e->settled, &e->lock, until) == ETIMEDOUT)
      break;
  pthread_mutex_unlock (&e->lock);
}

/* A new entry with what the disk cache remembers of it. */
static struct fs_entry *
new_entry (const struct stack_context *base, struct entry_config *config,
           char *text, struct timespec mtime)
{
  struct fs_entry *e = calloc (1, sizeof *e);
  struct disk_cache_entry_facts f;

  if (e == NULL)
    return NULL;
  e->refs = 1;
  e->ino = nodes_new_ino ();
  e->config = config;
  e->conf_text = text;
  e->mtime = mtime;
  e->base = base;
  e->state = FS_ENTRY_OPENING;
  pthread_mutex_init (&e->lock, NULL);
  pthread_cond_init (&e->settled, NULL);
  passthrough_inode_init (&e->passthrough);
  if (text && disk_cache_recall_entry (base->services->disk_cache, text,
                                       &f) == 0)
    {
      /* Nothing to learn: it opens when a file is first opened. */
      e->state = FS_ENTRY_OK;
      e->known = true;
      e->known_size = f.size;
      e->known_writable = f.writable;
      e->known_keep_open = f.keep_open;
      memcpy (e->known_stack, f.stack, sizeof e->known_stack);
    }
  return e;
}

/* Find the entry of the same name, config text and .conf mtime in a
 * previous tree.  A new mtime alone (`touch NAME.conf`) is a new version:
 * the way to make the daemon reopen a source that changed remotely. */
static struct fs_entry *
find_reusable (struct fs_tree *previous, const struct entry_config *config,
               const char *text, struct timespec mtime)
{
  struct fs_node *n;
  char path[4096];

  if (previous == NULL || text == NULL)
    return NULL;
  snprintf (path, sizeof path, "/%s", config->name);
  n = fs_tree_lookup (previous, path);
  if (n == NULL || n->entry == NULL || n->entry->conf_text == NULL
      || strcmp (n->entry->conf_text, text) != 0
      || n->entry->mtime.tv_sec != mtime.tv_sec
      || n->entry->mtime.tv_nsec != mtime.tv_nsec)
    return NULL;
  return n->entry;
}

/* Append a row to the tree's list of broken entries. */
static void
add_broken (struct fs_tree *tree, const char *rows)
{
  size_t old = tree->broken ? strlen (tree->broken) : 0;
  size_t add = strlen (rows);
  char *grown = realloc (tree->broken, old + add + 1);

  if (grown == NULL)
    return;
  memcpy (grown + old, rows, add + 1);
  tree->broken = grown;
}

/* Note an entry that opened but could not be placed, or did not open. */
static void
add_broken_entry (struct fs_tree *tree, struct fs_entry *e,
                  const char *message)
{
  char *row = entry_problem_row (e->config, e->conf_text, message);

  if (row)
    add_broken (tree, row);
  free (row);
  tree->broken_count++;
}

/* Build a tree for a catalog. */
int
fs_tree_build (struct catalog *catalog, struct fs_tree *previous,
               const struct stack_context *base, unsigned wait_ms,
               struct fs_tree **out)
{
  struct fs_tree *tree = calloc (1, sizeof *tree);
  struct fs_entry **fresh = calloc (catalog->count + 1, sizeof *fresh);
  size_t nfresh = 0;

  if (tree == NULL || fresh == NULL
      || (tree->root = calloc (1, sizeof *tree->root)) == NULL
      || (tree->root->name = strdup ("")) == NULL)
    {
      free (fresh);
      if (tree)
        free (tree->root);
      free (tree);
      return error_set (ENOMEM, "out of memory");
    }
  tree->refs = 1;
  tree->broken_count = catalog->error_count;
  if (catalog->errors)
    add_broken (tree, catalog->errors);
  for (size_t i = 0; i < catalog->count; i++)
    {
      struct entry_config *config = catalog->entries[i];
      struct timespec mtime = { 0, 0 };
      char *text = read_text (config->conf_path, &mtime);
      struct fs_entry *e = find_reusable (previous, config, text, mtime);
      bool is_new = e == NULL;

      catalog->entries[i] = NULL;
      if (e)
        {
          fs_entry_ref (e);
          free (text);
          entry_free (config);
        }
      else if ((e = new_entry (base, config, text, mtime)) == NULL)
        {
          free (text);
          entry_free (config);
          continue;
        }
      else
        {
          error_clear ();
          if (entry_static_check (config) < 0)
            {
              log_error ("%s: left out of the mount: %s", config->name,
                         error_message ());
              add_broken_entry (tree, e, error_message ());
              fs_entry_unref (e);
              continue;
            }
        }
      if (insert_entry (tree, e) < 0)
        {
          log_error ("%s: left out of the mount: %s", e->config->name,
                     error_message ());
          add_broken_entry (tree, e, error_message ());
          fs_entry_unref (e);
          continue;
        }
      tree->entry_count++;
      if (is_new && (!e->known || e->known_keep_open))
        fresh[nfresh++] = e;
    }
  catalog->count = 0;   /* the entries are ours now */
  sort_tree (tree->root);
  for (size_t i = 0; i < nfresh; i++)
    opener_submit (fresh[i], false);
  /* A short wait for entries whose size nobody knows yet, so that a
   * mount of reachable sources shows real sizes at once; a silent
   * server costs at most wait_ms, never its whole timeout. */
  if (wait_ms > 0)
    {
      struct timespec until = deadline_after (wait_ms);
      for (size_t i = 0; i < nfresh; i++)
        wait_first_open (fresh[i], &until);
    }
  free (fresh);
  *out = tree;
  return 0;
}

/* Walk path components from the root. */
struct fs_node *
fs_tree_lookup (struct fs_tree *tree, const char *path)
{
  struct fs_node *n = tree->root;

  while (*path == '/')
    path++;
  while (*path && n)
    {
      size_t len = strcspn (path, "/");
      n = find_child (n, path, len);
      path += len;
      while (*path == '/')
        path++;
    }
  return n;
}

/* Take a reference on a tree. */
void
fs_tree_ref (struct fs_tree *tree)
{
  __atomic_add_fetch (&tree->refs, 1, __ATOMIC_ACQ_REL);
}

/* Drop a reference; the last one frees the nodes (entries stay alive
 * while open files hold them). */
void
fs_tree_unref (struct fs_tree *tree)
{
  if (tree == NULL
      || __atomic_sub_fetch (&tree->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  free_node (tree->root);
  free (tree->broken);
  free (tree);
}

/* Visit the entries at and below a node. */
static void
node_for_each (struct fs_node *n, void (*fn) (struct fs_entry *, void *),
               void *arg)
{
  if (n->entry)
    fn (n->entry, arg);
  for (size_t i = 0; i < n->nchildren; i++)
    node_for_each (n->children[i], fn, arg);
}

/* Call fn on every entry of the tree. */
void
fs_tree_for_each_entry (struct fs_tree *tree,
                        void (*fn) (struct fs_entry *e, void *arg), void *arg)
{
  node_for_each (tree->root, fn, arg);
}

/* Count one entry by state (for fs_tree_count_states). */
struct state_counts
{
  size_t ok, opening, broken;
};

static void
count_entry (struct fs_entry *e, void *arg)
{
  struct state_counts *c = arg;

  pthread_mutex_lock (&e->lock);
  if (e->state == FS_ENTRY_OK)
    c->ok++;
  else if (e->state == FS_ENTRY_OPENING)
    c->opening++;
  else
    c->broken++;
  pthread_mutex_unlock (&e->lock);
}

/* Counts of the tree's entries by state. */
void
fs_tree_count_states (struct fs_tree *tree, size_t *ok, size_t *opening,
                      size_t *broken)
{
  struct state_counts c = { 0, 0, 0 };

  fs_tree_for_each_entry (tree, count_entry, &c);
  if (ok)
    *ok = c.ok;
  if (opening)
    *opening = c.opening;
  if (broken)
    *broken = c.broken;
}

/* Status of one entry and the nodes below. */
static void
node_status (struct fs_node *n, FILE *out)
{
  if (n->entry)
    {
      struct fs_entry *e = n->entry;
      struct layer *stack = fs_entry_stack (e), *shown;
      char layers[128], source[1024];

      text_redact_url (e->config->source ? e->config->source
                       : e->config->command[0], source, sizeof source);
      /* Under the lock: the facts, the state, and a spare (opener.h),
       * an open stack too, which the lock keeps from being closed. */
      pthread_mutex_lock (&e->lock);
      shown = stack ? stack : e->spare;
      if (shown)
        layer_describe (shown, layers, sizeof layers);
      else
        snprintf (layers, sizeof layers, "%s", e->known ? e->known_stack
                  : "unknown (not open yet)");
      fprintf (out, "[%s]\n", e->config->name);
      fprintf (out, "source: %s\n", source);
      fprintf (out, "stack: %s\n", layers);
      fprintf (out, "size: %llu\n",
               (unsigned long long) (e->known ? e->known_size : 0));
      /* open: whether the stack is open (a file was opened on it), kept
       * a while after the open that learnt its size (spare), or not
       * (an entry only listed holds no connection). */
      fprintf (out, "open: %s\n", stack ? "yes" : shown ? "spare" : "no");
      fprintf (out, "mode: %s\n", e->known && e->known_writable
               ? "read-write" : "read-only");
      if (e->state == FS_ENTRY_OPENING)
        fprintf (out, "state: opening\n");
      else if (e->state == FS_ENTRY_BROKEN)
        {
          /* One line: the reason is whatever the open recorded. */
          const char *why = e->open_error ? e->open_error : "cannot open";
          fprintf (out, "state: broken: %.*s\n", (int) strcspn (why, "\n"),
                   why);
          fprintf (out, "open-attempts: %u\n", e->attempts);
        }
      fprintf (out, "errors: %llu\n", e->errors);
      /* passthrough: the kernel reads this inode's backing file itself
       * in the opens now open; reads: READs that reached the stack. */
      pthread_mutex_lock (&e->passthrough.lock);
      fprintf (out, "passthrough: %s\n",
               e->passthrough.passthrough_opens ? "yes" : "no");
      pthread_mutex_unlock (&e->passthrough.lock);
      fprintf (out, "passthrough-opens: %llu\n",
               (unsigned long long) __atomic_load_n (&e->passthrough_opens,
                                                    __ATOMIC_RELAXED));
      fprintf (out, "reads: %llu\n",
               (unsigned long long) __atomic_load_n (&e->reads,
                                                    __ATOMIC_RELAXED));
      if (e->last_error)
        {
          char stamp[32];
          struct tm tm;

          fprintf (out, "last-error: %s\n", e->last_error);
          if (gmtime_r (&e->last_error_time, &tm)
              && strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm))
            fprintf (out, "last-error-time: %s\n", stamp);
        }
      if (stack == NULL && shown)
        layer_status (shown, out);
      pthread_mutex_unlock (&e->lock);
      if (stack)
        layer_status (stack, out);
      fprintf (out, "\n");
    }
  for (size_t i = 0; i < n->nchildren; i++)
    node_status (n->children[i], out);
}

/* A broken entry's "broken-entry:" row, like a bad .conf's. */
static void
broken_row (struct fs_entry *e, void *arg)
{
  FILE *out = arg;
  char *row = NULL;

  pthread_mutex_lock (&e->lock);
  if (e->state == FS_ENTRY_BROKEN)
    row = entry_problem_row (e->config, e->conf_text, e->open_error
                             ? e->open_error : "cannot open");
  pthread_mutex_unlock (&e->lock);
  if (row)
    fprintf (out, "broken-entry: %.*s\n", (int) strcspn (row, "\n"), row);
  free (row);
}

/* Status of every entry.  "entries" counts the entries that are open or
 * opening; "broken" the .conf files left out plus the entries whose
 * last open failed (they are listed, and retried). */
void
fs_tree_status (struct fs_tree *tree, FILE *out)
{
  size_t ok, opening, broken;

  fs_tree_count_states (tree, &ok, &opening, &broken);
  fprintf (out, "entries: %zu\nbroken: %zu\nopening: %zu\n",
           ok + opening, tree->broken_count + broken, opening);
  /* Every broken entry, whole: FILE:LINE: reason. */
  for (const char *row = tree->broken; row && *row;)
    {
      size_t len = strcspn (row, "\n");
      fprintf (out, "broken-entry: %.*s\n", (int) len, row);
      row += len + (row[len] == '\n');
    }
  fs_tree_for_each_entry (tree, broken_row, out);
  fprintf (out, "\n");
  node_status (tree->root, out);
}
