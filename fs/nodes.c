/* diskshelf: the inode table (see nodes.h). */
#include "nodes.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tree.h"

/* One inode the kernel may know. */
struct node
{
  uint64_t ino;
  uint64_t nlookup;          /* files: the kernel's lookups */
  struct fs_entry *entry;    /* files: one reference; NULL for directories */
  char *path;                /* directories: "/" or "/a/b"; owned */
  struct node *by_ino;       /* chain in the ino buckets */
  struct node *by_path;      /* directories: chain in the path buckets */
};

/* Two chained hash tables, grown when they fill; protected by lock. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct node **ino_buckets;
static struct node **path_buckets;
static size_t nbuckets;          /* both tables; a power of two */
static size_t nnodes;
static uint64_t nfiles;
static uint64_t next_ino = NODES_STATUS_INO + 1;   /* atomic */

uint64_t
nodes_new_ino (void)
{
  return __atomic_fetch_add (&next_ino, 1, __ATOMIC_RELAXED);
}

/* FNV-1a of a path. */
static size_t
hash_path (const char *path)
{
  uint64_t h = 1469598103934665603ULL;

  for (; *path; path++)
    h = (h ^ (unsigned char) *path) * 1099511628211ULL;
  return (size_t) h;
}

static size_t
hash_ino (uint64_t ino)
{
  return (size_t) (ino * 0x9E3779B97F4A7C15ULL >> 17);
}

/* Double the tables (or make them); the caller holds lock. */
static int
grow (void)
{
  size_t n = nbuckets ? nbuckets * 2 : 256;
  struct node **ib = calloc (n, sizeof *ib);
  struct node **pb = calloc (n, sizeof *pb);

  if (ib == NULL || pb == NULL)
    {
      free (ib);
      free (pb);
      return -ENOMEM;
    }
  for (size_t i = 0; i < nbuckets; i++)
    {
      struct node *x, *next;
      for (x = ino_buckets[i]; x; x = next)
        {
          size_t b = hash_ino (x->ino) & (n - 1);
          next = x->by_ino;
          x->by_ino = ib[b];
          ib[b] = x;
        }
      for (x = path_buckets[i]; x; x = next)
        {
          size_t b = hash_path (x->path) & (n - 1);
          next = x->by_path;
          x->by_path = pb[b];
          pb[b] = x;
        }
    }
  free (ino_buckets);
  free (path_buckets);
  ino_buckets = ib;
  path_buckets = pb;
  nbuckets = n;
  return 0;
}

/* The node of ino, or NULL; the caller holds lock. */
static struct node *
find_ino (uint64_t ino)
{
  if (nbuckets == 0)
    return NULL;
  for (struct node *x = ino_buckets[hash_ino (ino) & (nbuckets - 1)]; x;
       x = x->by_ino)
    if (x->ino == ino)
      return x;
  return NULL;
}

/* The directory node of path, or NULL; the caller holds lock. */
static struct node *
find_path (const char *path)
{
  if (nbuckets == 0)
    return NULL;
  for (struct node *x = path_buckets[hash_path (path) & (nbuckets - 1)]; x;
       x = x->by_path)
    if (strcmp (x->path, path) == 0)
      return x;
  return NULL;
}

/* Add a node to the ino table (and the path table for a directory);
 * the caller holds lock. */
static int
insert (struct node *x)
{
  size_t b;

  if (nnodes + 1 > nbuckets && grow () < 0)
    return -ENOMEM;
  b = hash_ino (x->ino) & (nbuckets - 1);
  x->by_ino = ino_buckets[b];
  ino_buckets[b] = x;
  if (x->path)
    {
      b = hash_path (x->path) & (nbuckets - 1);
      x->by_path = path_buckets[b];
      path_buckets[b] = x;
    }
  nnodes++;
  return 0;
}

/* Take a file node out of the ino table; the caller holds lock. */
static void
remove_file (struct node *x)
{
  for (struct node **p = &ino_buckets[hash_ino (x->ino) & (nbuckets - 1)];
       *p; p = &(*p)->by_ino)
    if (*p == x)
      {
        *p = x->by_ino;
        nnodes--;
        nfiles--;
        return;
      }
}

int
nodes_file_looked_up (struct fs_entry *e)
{
  struct node *x;

  pthread_mutex_lock (&lock);
  x = find_ino (e->ino);
  if (x == NULL)
    {
      x = calloc (1, sizeof *x);
      if (x)
        x->ino = e->ino;
      if (x == NULL || insert (x) < 0)
        {
          pthread_mutex_unlock (&lock);
          free (x);
          return -ENOMEM;
        }
      fs_entry_ref (e);
      x->entry = e;
      nfiles++;
    }
  x->nlookup++;
  pthread_mutex_unlock (&lock);
  return 0;
}

struct fs_entry *
nodes_file_entry (uint64_t ino)
{
  struct fs_entry *e = NULL;
  struct node *x;

  pthread_mutex_lock (&lock);
  x = find_ino (ino);
  if (x && x->entry)
    {
      e = x->entry;
      fs_entry_ref (e);
    }
  pthread_mutex_unlock (&lock);
  return e;
}

uint64_t
nodes_dir_ino (const char *path)
{
  struct node *x;
  uint64_t ino;

  if (strcmp (path, "/") == 0)
    return NODES_ROOT_INO;
  pthread_mutex_lock (&lock);
  x = find_path (path);
  if (x == NULL)
    {
      x = calloc (1, sizeof *x);
      if (x == NULL || (x->path = strdup (path)) == NULL)
        goto fail;
      x->ino = nodes_new_ino ();
      if (insert (x) < 0)
        goto fail;
    }
  ino = x->ino;
  pthread_mutex_unlock (&lock);
  return ino;

 fail:
  pthread_mutex_unlock (&lock);
  if (x)
    free (x->path);
  free (x);
  return 0;
}

uint64_t
nodes_dir_ino_known (const char *path)
{
  struct node *x;
  uint64_t ino;

  if (strcmp (path, "/") == 0)
    return NODES_ROOT_INO;
  pthread_mutex_lock (&lock);
  x = find_path (path);
  ino = x ? x->ino : 0;
  pthread_mutex_unlock (&lock);
  return ino;
}

const char *
nodes_dir_path (uint64_t ino)
{
  struct node *x;
  const char *path;

  if (ino == NODES_ROOT_INO)
    return "/";
  pthread_mutex_lock (&lock);
  x = find_ino (ino);
  path = x ? x->path : NULL;
  pthread_mutex_unlock (&lock);
  return path;
}

void
nodes_forget (uint64_t ino, uint64_t n)
{
  struct fs_entry *e = NULL;
  struct node *x;

  pthread_mutex_lock (&lock);
  x = find_ino (ino);
  if (x && x->entry)
    {
      x->nlookup = n < x->nlookup ? x->nlookup - n : 0;
      if (x->nlookup == 0)
        {
          remove_file (x);
          e = x->entry;
        }
      else
        x = NULL;
    }
  else
    x = NULL;
  pthread_mutex_unlock (&lock);
  free (x);
  fs_entry_unref (e);
}

uint64_t
nodes_file_count (void)
{
  uint64_t n;

  pthread_mutex_lock (&lock);
  n = nfiles;
  pthread_mutex_unlock (&lock);
  return n;
}

void
nodes_free_all (void)
{
  pthread_mutex_lock (&lock);
  for (size_t i = 0; i < nbuckets; i++)
    {
      struct node *x, *next;
      for (x = ino_buckets[i]; x; x = next)
        {
          next = x->by_ino;
          fs_entry_unref (x->entry);
          free (x->path);
          free (x);
        }
    }
  free (ino_buckets);
  free (path_buckets);
  ino_buckets = path_buckets = NULL;
  nbuckets = nnodes = 0;
  nfiles = 0;
  pthread_mutex_unlock (&lock);
}
