/* Fuzz harness: bt/metainfo.c's .torrent parser and the helpers callers
 * use on its result. */
#include <stdint.h>
#include <stdlib.h>

#include "bt/bt.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct bt_metainfo *mi;
  if (bt_metainfo_parse (data, size, &mi) < 0)
    return 0;
  uint64_t total = 0;
  for (uint32_t i = 0; i < mi->piece_count; i++)
    total += bt_metainfo_piece_size (mi, i);
  if (total != mi->total_length)
    abort ();
  for (size_t i = 0; i < mi->file_count; i++)
    if (bt_metainfo_find_file (mi, mi->files[i].path) < 0 && !mi->files[i].pad)
      abort ();
  (void) bt_metainfo_find_file (mi, "no/such/file");
  char hex[41];
  bt_info_hash_hex (mi, hex);
  bt_metainfo_free (mi);
  return 0;
}
