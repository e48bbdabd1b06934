/* Unit tests of the decoded-block cache (cache/blockcache.c): single
 * flight, the byte bound, failures, read-ahead, freeing a client while
 * its read-ahead is queued, zero blocks kept as holes, and clients of
 * one source sharing blocks. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockcache.h"
#include "error.h"

#include "check.h"

#define BLOCK 65536

static atomic_uint decodes;
static atomic_uint fail_index_calls;
static uint64_t fail_index = UINT64_MAX;

/* Fill a block with bytes derived from its index; block fail_index fails. */
static int
fake_decode (void *opaque, uint64_t index, void *buf, size_t size)
{
  unsigned char *p = buf;
  size_t i;

  (void) opaque;
  atomic_fetch_add (&decodes, 1);
  usleep (20000);               /* long enough for readers to pile up */
  if (index == fail_index)
    {
      atomic_fetch_add (&fail_index_calls, 1);
      return error_set (EIO, "fake: block %llu is bad",
                        (unsigned long long) index);
    }
  for (i = 0; i < size; i++)
    p[i] = (unsigned char) (index * 31 + i);
  return 0;
}

/* True when buf holds bytes [off, off+n) of block index. */
static int
check_bytes (const unsigned char *buf, uint64_t index, size_t off, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (buf[i] != (unsigned char) (index * 31 + off + i))
      return 0;
  return 1;
}

struct reader_arg
{
  struct block_cache_client *client;
  uint64_t index;
  int result;
};

/* One concurrent reader of a block. */
static void *
reader (void *p)
{
  struct reader_arg *a = p;
  unsigned char buf[4096];

  a->result = block_cache_read (a->client, a->index, BLOCK, 1000, buf,
                                sizeof buf);
  if (a->result == 0 && !check_bytes (buf, a->index, 1000, sizeof buf))
    a->result = -EBADMSG;
  return NULL;
}

/* Eight threads missing on one block decode it once. */
static void
test_single_flight (struct block_cache *cache)
{
  struct block_cache_client *client;
  pthread_t t[8];
  struct reader_arg a[8];
  int i;

  if (block_cache_client_new (cache, "sf", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  atomic_store (&decodes, 0);
  for (i = 0; i < 8; i++)
    {
      a[i] = (struct reader_arg) { client, 7, -1 };
      pthread_create (&t[i], NULL, reader, &a[i]);
    }
  for (i = 0; i < 8; i++)
    {
      pthread_join (t[i], NULL);
      CHECK (a[i].result == 0);
    }
  CHECK (atomic_load (&decodes) == 1);
  block_cache_client_free (client);
  printf ("single flight: ok\n");
}

/* Reading many blocks keeps the cache under its bound, and hits work. */
static void
test_bound (struct block_cache *cache)
{
  struct block_cache_client *client;
  struct block_cache_stats st;
  unsigned char buf[100];
  uint64_t i;

  if (block_cache_client_new (cache, "bound", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  for (i = 0; i < 40; i++)
    {
      CHECK (block_cache_read (client, i, BLOCK, 5, buf, sizeof buf) == 0);
      CHECK (check_bytes (buf, i, 5, sizeof buf));
      block_cache_get_stats (cache, &st);
      CHECK (st.used_bytes <= st.max_bytes);
    }
  atomic_store (&decodes, 0);
  CHECK (block_cache_read (client, 39, BLOCK, 0, buf, sizeof buf) == 0);
  CHECK (atomic_load (&decodes) == 0);          /* a hit */
  block_cache_get_stats (cache, &st);
  CHECK (st.evictions > 0);
  block_cache_client_free (client);
  block_cache_get_stats (cache, &st);
  CHECK (st.used_bytes == 0 && st.entries == 0);
  printf ("bound: ok\n");
}

/* A failing block gives its errno and message, is not kept, and other
 * blocks of the same client still read. */
static void
test_failure (struct block_cache *cache)
{
  struct block_cache_client *client;
  unsigned char buf[10];

  if (block_cache_client_new (cache, "fail", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  fail_index = 3;
  CHECK (block_cache_read (client, 3, BLOCK, 0, buf, sizeof buf) == -EIO);
  CHECK (strstr (error_message (), "block 3 is bad") != NULL);
  CHECK (block_cache_read (client, 3, BLOCK, 0, buf, sizeof buf) == -EIO);
  CHECK (atomic_load (&fail_index_calls) == 2);  /* tried again */
  CHECK (block_cache_read (client, 4, BLOCK, 0, buf, sizeof buf) == 0);
  fail_index = UINT64_MAX;
  block_cache_client_free (client);
  printf ("failure: ok\n");
}

/* Read-ahead decodes in the background; a later read is a hit. */
static void
test_prefetch (struct block_cache *cache)
{
  struct block_cache_client *client;
  struct block_cache_stats before, after;
  unsigned char buf[10];
  int i;

  if (block_cache_client_new (cache, "ahead", NULL, fake_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  block_cache_get_stats (cache, &before);
  CHECK (block_cache_prefetch (client, 1, BLOCK));
  CHECK (block_cache_prefetch (client, 2, BLOCK));
  for (i = 0; i < 200; i++)
    {
      block_cache_get_stats (cache, &after);
      if (after.decoded_blocks >= before.decoded_blocks + 2)
        break;
      usleep (10000);
    }
  block_cache_get_stats (cache, &before);
  CHECK (block_cache_read (client, 2, BLOCK, 0, buf, sizeof buf) == 0);
  block_cache_get_stats (cache, &after);
  CHECK (after.hits == before.hits + 1);
  /* Queue more read-ahead than can run, then free the client at once. */
  for (i = 10; i < 14; i++)
    block_cache_prefetch (client, i, BLOCK);
  block_cache_client_free (client);
  block_cache_get_stats (cache, &after);
  CHECK (after.used_bytes == 0);
  printf ("prefetch: ok\n");
}

/* A decoder whose even blocks are all zero. */
static int
zero_decode (void *opaque, uint64_t index, void *buf, size_t size)
{
  atomic_fetch_add (&decodes, 1);
  if (index % 2 == 0)
    return BLOCK_CACHE_ZERO;
  return fake_decode (opaque, index, buf, size);
}

/* A zero block is answered with zeroes and costs (almost) no memory. */
static void
test_zero (struct block_cache *cache)
{
  struct block_cache_client *client;
  struct block_cache_stats st;
  unsigned char buf[100], zeros[100] = { 0 };

  if (block_cache_client_new (cache, "zero", NULL, zero_decode, NULL,
                              &client) != 0)
    {
      CHECK (!"block_cache_client_new");
      return;
    }
  memset (buf, 0xff, sizeof buf);
  CHECK (block_cache_read (client, 2, BLOCK, 7, buf, sizeof buf)
         == BLOCK_CACHE_ZERO);
  CHECK (memcmp (buf, zeros, sizeof buf) == 0);
  CHECK (block_cache_read (client, 3, BLOCK, 7, buf, sizeof buf) == 0);
  CHECK (check_bytes (buf, 3, 7, sizeof buf));
  block_cache_get_stats (cache, &st);
  CHECK (st.zero_blocks >= 1);
  CHECK (st.used_bytes < BLOCK + 4096);
  block_cache_client_free (client);
  printf ("zero: ok\n");
}

/* Two clients with one key share blocks; another key does not. */
static void
test_shared (struct block_cache *cache)
{
  struct block_cache_client *a, *b, *other;
  unsigned char buf[64];

  CHECK (block_cache_client_new (cache, "a", "src 1", fake_decode, NULL,
                                 &a) == 0);
  CHECK (block_cache_client_new (cache, "b", "src 1", fake_decode, NULL,
                                 &b) == 0);
  CHECK (block_cache_client_new (cache, "o", "src 2", fake_decode, NULL,
                                 &other) == 0);
  atomic_store (&decodes, 0);
  CHECK (block_cache_read (a, 5, BLOCK, 0, buf, sizeof buf) == 0);
  CHECK (block_cache_read (b, 5, BLOCK, 0, buf, sizeof buf) == 0);
  CHECK (check_bytes (buf, 5, 0, sizeof buf));
  CHECK (atomic_load (&decodes) == 1);
  CHECK (block_cache_read (other, 5, BLOCK, 0, buf, sizeof buf) == 0);
  CHECK (atomic_load (&decodes) == 2);
  /* The first client goes: the blocks stay for the second. */
  block_cache_client_free (a);
  CHECK (block_cache_read (b, 5, BLOCK, 0, buf, sizeof buf) == 0);
  CHECK (atomic_load (&decodes) == 2);
  CHECK (block_cache_prefetch (b, 6, BLOCK));
  block_cache_client_free (b);
  block_cache_client_free (other);
  printf ("shared: ok\n");
}

int
main (void)
{
  struct block_cache *cache;

  log_set_level (LOG_LEVEL_ERROR + 0);
  if (block_cache_new (8 * BLOCK, 2, &cache) != 0)
    {
      CHECK (!"block_cache_new");
      return 1;
    }
  CHECK (block_cache_workers (cache) == 2);
  test_single_flight (cache);
  test_bound (cache);
  test_failure (cache);
  test_prefetch (cache);
  test_zero (cache);
  test_shared (cache);
  block_cache_free (cache);
  if (check_failures)
    fprintf (stderr, "%d check(s) failed\n", check_failures);
  return check_failures ? 1 : 0;
}
