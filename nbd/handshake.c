/* diskshelf nbd: the fixed-newstyle handshake.  Order (proto.md, as
 * libnbd does it): greeting, client flags, STARTTLS (nbds only, never a
 * fallback to plaintext), STRUCTURED_REPLY, SET_META_CONTEXT
 * base:allocation, GO with a BLOCK_SIZE request; EXPORT_NAME when the
 * server does not know GO.  Options are never pipelined, and every reply
 * is checked against what the option can produce. */
#include "internal.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALLOCATION_CONTEXT "base:allocation"

/* Replies we accept to one option: GO has a few INFO replies, and
 * SET_META_CONTEXT one per context asked for; a server that sends more
 * (forever) must not keep the negotiation going. */
#define MAX_REPLIES_PER_OPTION 64

/* Fail when the reply-th reply to option is one too many. */
static int
too_many_replies (struct nbd_conn *conn, const char *option, unsigned reply)
{
  if (reply <= MAX_REPLIES_PER_OPTION)
    return 0;
  return nbd_set_error (EPROTO, "%s: more than %u replies to %s; refusing "
                        "the server", conn->client->name,
                        MAX_REPLIES_PER_OPTION, option);
}

/* Send one option with its data. */
static int
send_option (struct nbd_conn *conn, uint32_t option, const void *data,
             uint32_t len)
{
  struct nbd_option h = { .magic = htobe64 (NBD_OPTS_MAGIC),
                          .option = htobe32 (option),
                          .length = htobe32 (len) };
  struct iovec iov[2] = { { &h, sizeof h }, { (void *) data, len } };
  int r = nbd_conn_send (conn, iov, len ? 2 : 1);

  if (r < 0)
    return nbd_set_error (-r, "%s: sending option %u: %s", conn->client->name,
                          option, strerror (-r));
  return 0;
}

/* Read one option reply header and its payload (at most
 * NBD_MAX_OPTION_REPLY bytes) into a malloc'd *data. */
static int
recv_reply (struct nbd_conn *conn, uint32_t option, uint32_t *type,
            char **data, uint32_t *len)
{
  struct nbd_option_reply h;
  const char *name = conn->client->name;
  int r = nbd_conn_recv (conn, &h, sizeof h);

  *data = NULL;
  if (r < 0)
    return nbd_set_error (-r == ECONNRESET ? ECONNRESET : -r,
                          "%s: reading option reply: %s", name,
                          -r == ECONNRESET ? "server closed the connection"
                          : strerror (-r));
  if (be64toh (h.magic) != NBD_REP_MAGIC)
    return nbd_set_error (EPROTO, "%s: bad option reply magic", name);
  if (be32toh (h.option) != option)
    return nbd_set_error (EPROTO, "%s: option reply for option %u, expected "
                          "%u", name, be32toh (h.option), option);
  *type = be32toh (h.reply);
  *len = be32toh (h.length);
  if (*len > NBD_MAX_OPTION_REPLY)
    return nbd_set_error (EPROTO, "%s: option reply of %u bytes is larger "
                          "than the %u-byte limit; refusing the server",
                          name, *len, (unsigned) NBD_MAX_OPTION_REPLY);
  if (*type == NBD_REP_ACK && *len != 0)
    return nbd_set_error (EPROTO, "%s: ACK with a payload", name);
  *data = malloc (*len + 1);
  if (*data == NULL)
    return nbd_set_error (ENOMEM, "%s: out of memory", name);
  r = nbd_conn_recv (conn, *data, *len);
  if (r < 0)
    {
      free (*data);
      *data = NULL;
      return nbd_set_error (-r, "%s: reading option reply: %s", name,
                            strerror (-r));
    }
  (*data)[*len] = '\0';
  return 0;
}

/* Turn an error reply into an errno and a message. */
static int
option_error (struct nbd_conn *conn, const char *what, uint32_t type,
              const char *msg, uint32_t len)
{
  char text[256];
  int err;
  const char *hint = "";

  /* The spec bounds strings at 4096 bytes: a longer one is not shown. */
  if (len > NBD_MAX_STRING)
    snprintf (text, sizeof text, "(a %u-byte message, longer than %u)",
              len, (unsigned) NBD_MAX_STRING);
  else
    text_escape (text, sizeof text, msg, len);
  switch (type)
    {
    case NBD_REP_ERR_UNSUP: err = ENOTSUP; break;
    case NBD_REP_ERR_POLICY: err = EACCES; break;
    case NBD_REP_ERR_TLS_REQD:
      err = EACCES;
      hint = " (the server requires TLS: use an nbds:// URI)";
      break;
    case NBD_REP_ERR_UNKNOWN:
      err = ENOENT;
      hint = " (no such export)";
      break;
    case NBD_REP_ERR_SHUTDOWN: err = ESHUTDOWN; break;
    case NBD_REP_ERR_PLATFORM: err = ENOTSUP; break;
    default: err = EINVAL; break;
    }
  return nbd_set_error (err, "%s: %s refused (error %u)%s%s%s",
                        conn->client->name, what,
                        type & ~NBD_REP_FLAG_ERROR, hint,
                        text[0] ? ": " : "", text);
}

/* Build INFO/GO/META_CONTEXT data: u32 name length, name, then tail. */
static char *
build_name_data (const char *name, const void *tail, size_t tail_len,
                 uint32_t *len)
{
  size_t n = strlen (name);
  char *buf = malloc (4 + n + tail_len);
  uint32_t be = htobe32 ((uint32_t) n);

  if (buf == NULL)
    return NULL;
  memcpy (buf, &be, 4);
  memcpy (buf + 4, name, n);
  memcpy (buf + 4 + n, tail, tail_len);
  *len = (uint32_t) (4 + n + tail_len);
  return buf;
}

/* NBD_OPT_STARTTLS then the TLS handshake; any failure is final. */
static int
start_tls (struct nbd_conn *conn)
{
  uint32_t type, len;
  char *data;
  int r = send_option (conn, NBD_OPT_STARTTLS, NULL, 0);

  if (r < 0)
    return r;
  r = recv_reply (conn, NBD_OPT_STARTTLS, &type, &data, &len);
  if (r < 0)
    return r;
  if (type != NBD_REP_ACK)
    {
      if (type & NBD_REP_FLAG_ERROR)
        r = option_error (conn, "STARTTLS (nbds:// never falls back to "
                          "plaintext)", type, data, len);
      else
        r = nbd_set_error (EPROTO, "%s: unexpected reply %u to STARTTLS",
                           conn->client->name, type);
      free (data);
      return r;
    }
  free (data);
  /* Whatever follows the ACK in the clear would otherwise be handed out
   * after the handshake as if it had come through TLS: a man in the
   * middle could forge the rest of the negotiation and the data. */
  if (conn->rpos != conn->rlen)
    return nbd_set_error (EPROTO, "%s: the server sent %zu bytes in the "
                          "clear after its STARTTLS reply; refusing the "
                          "connection (something between us and the "
                          "server may be injecting data)",
                          conn->client->name, conn->rlen - conn->rpos);
  return nbd_tls_handshake (conn);
}

/* NBD_OPT_STRUCTURED_REPLY: on ACK replies may be structured. */
static int
structured_reply (struct nbd_conn *conn)
{
  uint32_t type, len;
  char *data;
  int r = send_option (conn, NBD_OPT_STRUCTURED_REPLY, NULL, 0);

  if (r < 0)
    return r;
  r = recv_reply (conn, NBD_OPT_STRUCTURED_REPLY, &type, &data, &len);
  free (data);
  if (r < 0)
    return r;
  if (type == NBD_REP_ACK)
    conn->info.structured = true;
  else if (!(type & NBD_REP_FLAG_ERROR))
    return nbd_set_error (EPROTO, "%s: unexpected reply %u to "
                          "STRUCTURED_REPLY", conn->client->name, type);
  return 0;
}

/* NBD_OPT_SET_META_CONTEXT for base:allocation; errors only mean no
 * block status. */
static int
set_meta_context (struct nbd_conn *conn, const char *export)
{
  static const char query[] = ALLOCATION_CONTEXT;
  char tail[4 + 4 + sizeof query - 1];
  uint32_t be, len, type;
  char *payload, *data;
  int r;

  be = htobe32 (1);
  memcpy (tail, &be, 4);
  be = htobe32 ((uint32_t) (sizeof query - 1));
  memcpy (tail + 4, &be, 4);
  memcpy (tail + 8, query, sizeof query - 1);
  payload = build_name_data (export, tail, sizeof tail, &len);
  if (payload == NULL)
    return nbd_set_error (ENOMEM, "%s: out of memory", conn->client->name);
  r = send_option (conn, NBD_OPT_SET_META_CONTEXT, payload, len);
  free (payload);
  if (r < 0)
    return r;
  for (unsigned n = 1;; n++)
    {
      r = too_many_replies (conn, "SET_META_CONTEXT", n);
      if (r < 0)
        return r;
      r = recv_reply (conn, NBD_OPT_SET_META_CONTEXT, &type, &data, &len);
      if (r < 0)
        return r;
      if (type == NBD_REP_ACK)
        {
          free (data);
          return 0;
        }
      if (type & NBD_REP_FLAG_ERROR)
        {
          free (data);
          conn->info.has_allocation = false;
          return 0;
        }
      if (type != NBD_REP_META_CONTEXT || len <= 4
          || len > 4 + NBD_MAX_STRING
          || len - 4 != sizeof query - 1
          || memcmp (data + 4, query, sizeof query - 1) != 0
          || conn->info.has_allocation)
        {
          free (data);
          return nbd_set_error (EPROTO, "%s: bad reply to SET_META_CONTEXT "
                                "(type %u, %u bytes)", conn->client->name,
                                type, len);
        }
      memcpy (&be, data, 4);
      conn->info.allocation_id = be32toh (be);
      conn->info.has_allocation = true;
      free (data);
    }
}

/* Apply an NBD_INFO_BLOCK_SIZE triple if it is sane (else keep the
 * defaults, as libnbd does). */
static void
apply_block_size (struct nbd_conn *conn, uint32_t min, uint32_t pref,
                  uint32_t max)
{
  if (min == 0 || min > 65536 || (min & (min - 1)) != 0
      || pref < 512 || (pref & (pref - 1)) != 0 || pref < min || max < pref
      || (max != UINT32_MAX && max % min != 0))
    return;
  conn->info.min_block = min;
  conn->info.pref_block = pref;
  conn->info.max_payload = max;
}

/* NBD_OPT_GO; *unsupported is set when the server answered ERR_UNSUP. */
static int
go (struct nbd_conn *conn, const char *export, bool *unsupported)
{
  const char *name = conn->client->name;
  uint16_t infos[2] = { htobe16 (1), htobe16 (NBD_INFO_BLOCK_SIZE) };
  uint32_t len, type;
  char *payload, *data;
  bool got_export = false;
  int r;

  *unsupported = false;
  payload = build_name_data (export, infos, sizeof infos, &len);
  if (payload == NULL)
    return nbd_set_error (ENOMEM, "%s: out of memory", name);
  r = send_option (conn, NBD_OPT_GO, payload, len);
  free (payload);
  if (r < 0)
    return r;
  for (unsigned n = 1;; n++)
    {
      uint16_t info;

      r = too_many_replies (conn, "GO", n);
      if (r < 0)
        return r;
      r = recv_reply (conn, NBD_OPT_GO, &type, &data, &len);
      if (r < 0)
        return r;
      if (type == NBD_REP_ACK)
        {
          free (data);
          if (!got_export)
            return nbd_set_error (EPROTO, "%s: GO acknowledged without "
                                  "export information", name);
          return 0;
        }
      if (type == NBD_REP_ERR_UNSUP)
        {
          free (data);
          *unsupported = true;
          return -ENOTSUP;
        }
      if (type & NBD_REP_FLAG_ERROR)
        {
          r = option_error (conn, "opening the export", type, data, len);
          free (data);
          return r;
        }
      if (type != NBD_REP_INFO || len < 2)
        {
          free (data);
          return nbd_set_error (EPROTO, "%s: unexpected reply %u (%u bytes) "
                                "to GO", name, type, len);
        }
      memcpy (&info, data, 2);
      info = be16toh (info);
      if (info == NBD_INFO_EXPORT)
        {
          struct nbd_info_export e;
          if (len != sizeof e)
            goto bad_info;
          memcpy (&e, data, sizeof e);
          conn->info.size = be64toh (e.size);
          conn->info.eflags = be16toh (e.eflags);
          got_export = true;
        }
      else if (info == NBD_INFO_BLOCK_SIZE)
        {
          struct nbd_info_block_size b;
          if (len != sizeof b)
            goto bad_info;
          memcpy (&b, data, sizeof b);
          apply_block_size (conn, be32toh (b.minimum), be32toh (b.preferred),
                            be32toh (b.maximum));
        }
      else if ((info == NBD_INFO_NAME || info == NBD_INFO_DESCRIPTION)
               && len > 2 + NBD_MAX_STRING)
        {
          free (data);
          return nbd_set_error (EPROTO, "%s: the export %s the server sent "
                                "is %u bytes, longer than the %u-byte limit",
                                name, info == NBD_INFO_NAME ? "name"
                                : "description", len - 2,
                                (unsigned) NBD_MAX_STRING);
        }
      /* Other info types are ignored, as the spec says. */
      free (data);
      continue;

    bad_info:
      free (data);
      return nbd_set_error (EPROTO, "%s: NBD_INFO %u with bad length %u",
                            name, info, len);
    }
}

/* NBD_OPT_EXPORT_NAME, the old way to pick the export. */
static int
export_name (struct nbd_conn *conn, const char *export, uint32_t cflags)
{
  struct nbd_export_name_reply rep;
  int r = send_option (conn, NBD_OPT_EXPORT_NAME, export,
                       (uint32_t) strlen (export));

  if (r < 0)
    return r;
  r = nbd_conn_recv (conn, &rep, sizeof rep);
  if (r < 0)
    return nbd_set_error (ENOENT, "%s: the server closed the connection "
                          "after EXPORT_NAME (no export named '%s'?)",
                          conn->client->name, export);
  if (!(cflags & NBD_FLAG_C_NO_ZEROES))
    {
      r = nbd_conn_skip (conn, 124);
      if (r < 0)
        return nbd_set_error (-r, "%s: reading export info: %s",
                              conn->client->name, strerror (-r));
    }
  conn->info.size = be64toh (rep.size);
  conn->info.eflags = be16toh (rep.eflags);
  /* Without GO there is no block status negotiated for this export. */
  conn->info.has_allocation = false;
  return 0;
}

/* Ask the server to end the negotiation, without waiting for a reply. */
static void
send_abort (struct nbd_conn *conn)
{
  send_option (conn, NBD_OPT_ABORT, NULL, 0);
}

/* Check the negotiated export and derive the request limits. */
static int
finish (struct nbd_conn *conn)
{
  struct nbd_export_info *i = &conn->info;

  if (i->eflags == 0)
    return nbd_set_error (EPROTO, "%s: server sent no transmission flags",
                          conn->client->name);
  if (i->size > INT64_MAX)
    return nbd_set_error (EPROTO, "%s: export size %llu is too large",
                          conn->client->name, (unsigned long long) i->size);
  if (!i->structured)
    i->has_allocation = false;
  if (i->max_payload > NBD_MAX_PAYLOAD)
    i->max_payload = NBD_MAX_PAYLOAD;
  i->max_payload -= i->max_payload % i->min_block;
  return 0;
}

/* Negotiate on a freshly connected conn->fd, filling conn->info. */
int
nbd_handshake (struct nbd_conn *conn)
{
  struct nbd_client *c = conn->client;
  const char *export = c->uri->export_name;
  struct { uint64_t magic, version; } hello;
  uint16_t gflags;
  uint32_t cflags;
  bool unsupported;
  int r;

  memset (&conn->info, 0, sizeof conn->info);
  conn->info.min_block = 1;
  conn->info.pref_block = 4096;
  conn->info.max_payload = NBD_MAX_PAYLOAD;

  r = nbd_conn_recv (conn, &hello, sizeof hello);
  if (r < 0)
    return nbd_set_error (-r == ETIMEDOUT ? ETIMEDOUT : ECONNRESET,
                          "%s: no greeting from the server (%s)", c->name,
                          -r == ETIMEDOUT ? "timed out"
                          : "connection closed");
  if (be64toh (hello.magic) != NBD_MAGIC)
    return nbd_set_error (EPROTO, "%s: not an NBD server (bad greeting)",
                          c->name);
  if (be64toh (hello.version) == NBD_OLD_MAGIC)
    return nbd_set_error (EPROTO, "%s: the server speaks the oldstyle "
                          "protocol, which has no export names and no TLS; "
                          "run it in newstyle mode (nbdkit without "
                          "--oldstyle)", c->name);
  if (be64toh (hello.version) != NBD_OPTS_MAGIC)
    return nbd_set_error (EPROTO, "%s: unknown NBD greeting", c->name);
  r = nbd_conn_recv (conn, &gflags, sizeof gflags);
  if (r < 0)
    return nbd_set_error (ECONNRESET, "%s: truncated greeting", c->name);
  gflags = be16toh (gflags);
  cflags = gflags & (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  {
    uint32_t be = htobe32 (cflags);
    struct iovec iov = { &be, 4 };
    r = nbd_conn_send (conn, &iov, 1);
    if (r < 0)
      return nbd_set_error (-r, "%s: sending client flags: %s", c->name,
                            strerror (-r));
  }

  if (!(cflags & NBD_FLAG_FIXED_NEWSTYLE))
    {
      if (c->uri->tls)
        return nbd_set_error (EPROTO, "%s: the server is not fixed-newstyle, "
                              "so TLS is impossible", c->name);
      r = export_name (conn, export, cflags);
      return r < 0 ? r : finish (conn);
    }

  if (c->uri->tls)
    {
      r = start_tls (conn);
      if (r < 0)
        return r;
      conn->info.tls = true;
    }
  r = structured_reply (conn);
  if (r < 0)
    return r;
  if (conn->info.structured)
    {
      r = set_meta_context (conn, export);
      if (r < 0)
        return r;
    }
  r = go (conn, export, &unsupported);
  if (r < 0 && unsupported)
    r = export_name (conn, export, cflags);
  else if (r < 0)
    {
      int saved = r;
      send_abort (conn);
      return saved;
    }
  if (r < 0)
    return r;
  return finish (conn);
}
