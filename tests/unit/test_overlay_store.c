/* Unit tests of the overlay's store (backends/overlay/store.c): the map's
 * run scanning across word boundaries, a persistent file that keeps its
 * map only after a sync, the base check, and a file that is not an
 * overlay. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "overlay-internal.h"

/* run_end over a discard store's map, against a naive scan. */
static void
test_run_end (void)
{
  struct overlay_store s;
  static const uint64_t claims[] = { 0, 1, 2, 63, 64, 65, 127, 200, 201, 1000 };

  CHECK (overlay_store_init_discard (&s, "/tmp", 1100 * OVERLAY_BLOCK) == 0);
  for (size_t i = 0; i < sizeof claims / sizeof claims[0]; i++)
    overlay_store_claim (&s, claims[i]);
  CHECK (overlay_store_owned (&s) == sizeof claims / sizeof claims[0]);
  for (uint64_t b = 0; b < s.nblocks; b++)
    {
      uint64_t naive = b + 1;
      while (naive < s.nblocks
             && overlay_store_owns (&s, naive) == overlay_store_owns (&s, b))
        naive++;
      if (overlay_store_run_end (&s, b, s.nblocks) != naive)
        {
          fprintf (stderr, "run_end (%llu) = %llu, want %llu\n",
                   (unsigned long long) b,
                   (unsigned long long) overlay_store_run_end (&s, b,
                                                               s.nblocks),
                   (unsigned long long) naive);
          check_failures++;
        }
      /* A shorter limit is respected. */
      CHECK (overlay_store_run_end (&s, b, b + 1) == b + 1);
    }
  overlay_store_drop (&s);
  CHECK (overlay_store_owned (&s) == 0);
  overlay_store_close (&s);
}

/* A persistent file: bits reach the disk at sync; the base is checked. */
static void
test_persistent (void)
{
  char dir[] = "/tmp/overlay-store-XXXXXX";
  char path[256];
  struct overlay_store s;
  int fd;

  CHECK (mkdtemp (dir) != NULL);
  snprintf (path, sizeof path, "%s/x.overlay", dir);
  CHECK (overlay_store_open_file (&s, path, 1 << 20, "base A", "A") == 0);
  overlay_store_claim (&s, 3);
  overlay_store_claim (&s, 255);
  overlay_store_close (&s);      /* no sync: the bits are lost */

  CHECK (overlay_store_open_file (&s, path, 1 << 20, "base A", "A") == 0);
  CHECK (overlay_store_owned (&s) == 0);
  overlay_store_claim (&s, 3);
  overlay_store_claim (&s, 255);
  CHECK (overlay_store_sync (&s) == 0);
  /* A second opener is refused while it is held. */
  {
    struct overlay_store t;
    CHECK (overlay_store_open_file (&t, path, 1 << 20, "base A", "A")
           == -EBUSY);
  }
  overlay_store_close (&s);

  CHECK (overlay_store_open_file (&s, path, 1 << 20, "base A", "A") == 0);
  CHECK (overlay_store_owned (&s) == 2);
  CHECK (overlay_store_owns (&s, 3) && overlay_store_owns (&s, 255));
  overlay_store_close (&s);

  /* Another base, another size: refused, naming both. */
  CHECK (overlay_store_open_file (&s, path, 1 << 20, "base B", "B")
         == -EINVAL);
  CHECK (strstr (error_message (), "another base") != NULL);
  CHECK (overlay_store_open_file (&s, path, 2 << 20, "base A", "A")
         == -EINVAL);

  /* Not an overlay: refused, left alone. */
  fd = open (path, O_WRONLY | O_TRUNC);
  CHECK (fd >= 0 && write (fd, "hello", 5) == 5);
  close (fd);
  CHECK (overlay_store_open_file (&s, path, 1 << 20, "base A", "A")
         == -EINVAL);
  CHECK (strstr (error_message (), "not a diskshelf overlay") != NULL);

  unlink (path);
  rmdir (dir);
}

int
main (void)
{
  test_run_end ();
  test_persistent ();
  return check_failures ? 1 : 0;
}
