/* diskshelf bt unit tests: the shared fixture, a trackerless
 * single-file torrent of 4 pieces (the last one short) over content
 * made in memory.  Used by test_session.c and test_seeding.c. */
#ifndef DISKSHELF_BT_TEST_FIXTURE_H
#define DISKSHELF_BT_TEST_FIXTURE_H

#include <stdint.h>

#include "bt.h"

#define PLEN 32768
#define TOTAL (3 * PLEN + 100)

/* The torrent's bytes, filled by make_torrent. */
extern uint8_t content[TOTAL];

/* Fill content and return its torrent (exits on failure); the caller
 * frees it with bt_metainfo_free. */
struct bt_metainfo *make_torrent (void);

#endif
