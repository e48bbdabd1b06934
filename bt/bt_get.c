/* bt-get: fetch or seed one torrent through a bt_session.
 *
 *   bt-get [--out FILE] [--seed FILE] [--listen ADDR] [--port N]
 *          [--peer HOST:PORT]... [--timeout S] [--threads N]
 *          [--pieces FIRST-LAST] [--serve] [--announce-retry S]
 *          [--announce-min-interval S] [--ca-file PEM] [--verbose] TORRENT
 *
 * --out: fetch the pieces (all, or FIRST-LAST) with N reader threads and
 * write them at their offsets in FILE (the files of a multi-file torrent
 * concatenated).  --seed: FILE holds the content; its pieces are served
 * (verified before use).  --serve: after fetching, keep serving until
 * SIGTERM or SIGINT.  Prints "port N" when listening and, at the end,
 * the session's counters as key=value lines.  Exit status 0 on success,
 * 1 when a piece could not be fetched, 2 on usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bt.h"
#include "error.h"

struct file_store
{
  int fd;
  const struct bt_metainfo *mi;
  bool all;                     /* seeding: claim every piece */
  pthread_mutex_t lock;
  uint8_t *have;                /* lock */
};

/* has_piece: every piece when seeding, else those written. */
static bool
store_has (void *ctx, uint32_t index)
{
  struct file_store *st = ctx;
  if (st->all)
    return true;
  pthread_mutex_lock (&st->lock);
  bool h = st->have[index];
  pthread_mutex_unlock (&st->lock);
  return h;
}

/* read_piece: pread at the piece's offset. */
static int
store_read (void *ctx, uint32_t index, uint8_t *buf, size_t len)
{
  struct file_store *st = ctx;
  off_t off = (off_t) index * st->mi->piece_length;
  ssize_t n = pread (st->fd, buf, len, off);
  return n == (ssize_t) len ? 0 : -EIO;
}

/* write_piece: pwrite at the piece's offset. */
static int
store_write (void *ctx, uint32_t index, const uint8_t *buf, size_t len)
{
  struct file_store *st = ctx;
  off_t off = (off_t) index * st->mi->piece_length;
  if (pwrite (st->fd, buf, len, off) != (ssize_t) len)
    return -EIO;
  pthread_mutex_lock (&st->lock);
  st->have[index] = 1;
  pthread_mutex_unlock (&st->lock);
  return 0;
}

struct job
{
  struct bt_session *s;
  const struct bt_metainfo *mi;
  atomic_uint next;
  uint32_t last;
  atomic_int failed;
};

/* A reader thread: take the next piece, read it through the session. */
static void *
reader (void *opaque)
{
  struct job *j = opaque;
  uint8_t *buf = malloc (j->mi->piece_length);
  for (;;)
    {
      uint32_t i = atomic_fetch_add (&j->next, 1);
      if (i > j->last || buf == NULL)
        break;
      if (bt_read_piece (j->s, i, buf) < 0)
        {
          fprintf (stderr, "bt-get: %s\n", error_message ());
          atomic_store (&j->failed, 1);
          break;
        }
    }
  free (buf);
  return NULL;
}

/* Parse a whole non-negative decimal number (seconds may have a
 * fraction); exits 2 on anything else. */
static double
number (const char *text, double max)
{
  char *end;
  errno = 0;
  double v = strtod (text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(v >= 0) || v > max)
    {
      fprintf (stderr, "bt-get: bad number \"%s\"\n", text);
      exit (2);
    }
  return v;
}

/* Print the usage and exit 2. */
static void
usage (void)
{
  fprintf (stderr, "usage: bt-get [--out FILE|--seed FILE] [--listen ADDR] "
           "[--port N] [--peer HOST:PORT]... [--timeout S] [--threads N] "
           "[--pieces FIRST-LAST] [--serve] [--announce-retry S] "
           "[--announce-min-interval S] [--ca-file PEM] [--verbose] TORRENT\n");
  exit (2);
}

int
main (int argc, char **argv)
{
  static const struct option opts[] = {
    { "out", required_argument, NULL, 'o' },
    { "seed", required_argument, NULL, 's' },
    { "listen", required_argument, NULL, 'l' },
    { "port", required_argument, NULL, 'p' },
    { "peer", required_argument, NULL, 'P' },
    { "timeout", required_argument, NULL, 't' },
    { "threads", required_argument, NULL, 'n' },
    { "pieces", required_argument, NULL, 'r' },
    { "serve", no_argument, NULL, 'S' },
    { "verbose", no_argument, NULL, 'v' },
    { "announce-retry", required_argument, NULL, 'R' },
    { "announce-min-interval", required_argument, NULL, 'I' },
    { "ca-file", required_argument, NULL, 'C' },
    { NULL, 0, NULL, 0 },
  };
  const char *out = NULL, *seed = NULL, *peers[64] = { NULL };
  unsigned npeers = 0, threads = 4;
  long first = 0, last = -1;
  bool serve = false;
  struct bt_settings set = { .listen_address = "127.0.0.1" };
  int c;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1)
    switch (c)
      {
      case 'o': out = optarg; break;
      case 's': seed = optarg; set.listen = true; break;
      case 'l': set.listen_address = optarg; set.listen = true; break;
      case 'p':
        set.listen_port = number (optarg, 65535);
        set.listen = true;
        break;
      case 'P': if (npeers < 63) peers[npeers++] = optarg; break;
      case 't': set.timeout = number (optarg, 1e6); break;
      case 'n': threads = number (optarg, 64); break;
      case 'r':
        if (sscanf (optarg, "%ld-%ld", &first, &last) != 2)
          usage ();
        break;
      case 'S': serve = true; set.listen = true; break;
      case 'v': log_set_level (LOG_LEVEL_DEBUG); break;
      case 'R': set.announce_retry = number (optarg, 1e6); break;
      case 'I': set.announce_min_interval = number (optarg, 1e6); break;
      case 'C': set.ca_file = optarg; break;
      default: usage ();
      }
  if (optind + 1 != argc || (out == NULL) == (seed == NULL) || threads == 0
      || threads > 64)
    usage ();
  set.extra_peers = npeers ? peers : NULL;
  set.name = argv[optind];

  struct bt_metainfo *mi;
  if (bt_metainfo_load (argv[optind], &mi) < 0)
    {
      fprintf (stderr, "bt-get: %s\n", error_message ());
      return 1;
    }
  struct file_store st = { .mi = mi, .all = seed != NULL };
  pthread_mutex_init (&st.lock, NULL);
  st.have = calloc (mi->piece_count, 1);
  st.fd = seed ? open (seed, O_RDONLY | O_CLOEXEC)
               : open (out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (st.fd < 0 || st.have == NULL)
    {
      perror (seed ? seed : out);
      return 1;
    }
  struct bt_store_ops ops = { store_has, store_read, store_write };

  sigset_t sigs;
  sigemptyset (&sigs);
  sigaddset (&sigs, SIGTERM);
  sigaddset (&sigs, SIGINT);
  /* Serving ends with SIGTERM/SIGINT, taken by sigwait below (so every
   * thread must block them); a plain fetch just dies of them. */
  bool wait_signal = seed != NULL || serve;
  if (wait_signal)
    pthread_sigmask (SIG_BLOCK, &sigs, NULL);

  struct bt_session *s;
  if (bt_session_open (mi, &set, &ops, &st, &s) < 0)
    {
      fprintf (stderr, "bt-get: %s\n", error_message ());
      return 1;
    }
  if (bt_session_port (s))
    printf ("port %u\n", bt_session_port (s));
  fflush (stdout);

  int status = 0;
  if (out != NULL)
    {
      if (last < 0 || last >= (long) mi->piece_count)
        last = mi->piece_count - 1;
      struct job j = { .s = s, .mi = mi, .next = first, .last = last };
      pthread_t th[64];
      for (unsigned i = 0; i < threads; i++)
        pthread_create (&th[i], NULL, reader, &j);
      for (unsigned i = 0; i < threads; i++)
        pthread_join (th[i], NULL);
      status = atomic_load (&j.failed) ? 1 : 0;
      printf ("fetched %s\n", status ? "failed" : "ok");
      fflush (stdout);
    }
  if (wait_signal)
    {
      int sig;
      sigwait (&sigs, &sig);
    }
  struct bt_stats stats;
  bt_session_stats (s, &stats);
  bt_session_close (s);
  printf ("peers_known=%u\npeers_banned=%u\npieces_fetched=%llu\n"
          "hash_failures=%llu\nbytes_down=%llu\nbytes_up=%llu\n"
          "announces_ok=%llu\nannounces_failed=%llu\n",
          stats.peers_known, stats.peers_banned,
          (unsigned long long) stats.pieces_fetched,
          (unsigned long long) stats.hash_failures,
          (unsigned long long) stats.bytes_down,
          (unsigned long long) stats.bytes_up,
          (unsigned long long) stats.announces_ok,
          (unsigned long long) stats.announces_failed);
  close (st.fd);
  free (st.have);
  pthread_mutex_destroy (&st.lock);
  bt_metainfo_free (mi);
  return status;
}
