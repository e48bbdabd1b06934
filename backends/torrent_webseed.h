/* diskshelf: BEP 19 web seeds (`url-list`) for the torrent transport.
 *
 * A web seed is an HTTP(S) server holding the torrent's files: a piece
 * is fetched as range GETs of the files it spans (the HTTP transport's
 * one-request code, backends/http/fetch.c), and its SHA-1 is checked
 * like a peer's before any byte is used.  The torrent fetcher asks the
 * web seeds first and falls back to the swarm; a web seed that fails is
 * left alone for WEBSEED_BACKOFF seconds.
 *
 * Ownership: the torrent source owns its struct torrent_webseeds; each
 * of the engine's fetching threads owns one context (a curl handle).
 * Thread model: webseeds_fetch from any number of threads, each with
 * its own context; the rest is fixed after open, or atomic.
 */
#ifndef DISKSHELF_TORRENT_WEBSEED_H
#define DISKSHELF_TORRENT_WEBSEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bt/bt.h"

struct torrent_webseeds;

/* Web seeds of mi's url-list (NULL in *out when it has none).  ca_file,
 * timeout: as the entry's.  0 or a negative errno with a message. */
int webseeds_new (const struct bt_metainfo *mi, const char *label,
                  const char *ca_file, double timeout,
                  struct torrent_webseeds **out);
void webseeds_free (struct torrent_webseeds *w);

/* Abort transfers and fail later fetches at once (closing). */
void webseeds_stop (struct torrent_webseeds *w);

/* A fetching thread's context (a curl handle), NULL on failure. */
void *webseeds_context_new (struct torrent_webseeds *w);
void webseeds_context_free (void *ctx);

/* Fill buf with the verified pieces first..last (whole pieces, in
 * order) from a web seed that is not backing off.  0, or a negative
 * errno with a message (then the caller asks the swarm). */
int webseeds_fetch (struct torrent_webseeds *w, void *ctx, uint8_t *buf,
                    uint32_t first, uint32_t last);

/* "torrent-webseeds: N, P pieces, B bytes, F failures". */
void webseeds_status (struct torrent_webseeds *w, FILE *out);

#endif
