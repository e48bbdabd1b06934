/* diskshelf nbd: the NBD wire format (compact headers).
 *
 * Every integer on the wire is big-endian; the structs below are packed
 * and their sizes are checked at compile time.  Values are taken from the
 * NBD protocol document (doc/proto.md in NetworkBlockDevice/nbd).
 * Private to nbd/.
 */
#ifndef DISKSHELF_NBD_PROTOCOL_H
#define DISKSHELF_NBD_PROTOCOL_H

#include <stdint.h>

/* Magic numbers (proto.md "Handshake" and "Transmission"). */
#define NBD_MAGIC               UINT64_C(0x4e42444d41474943)  /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC          UINT64_C(0x49484156454F5054)  /* "IHAVEOPT" */
#define NBD_OLD_MAGIC           UINT64_C(0x00420281861253)
#define NBD_REP_MAGIC           UINT64_C(0x0003e889045565a9)
#define NBD_REQUEST_MAGIC       UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC  UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef)

/* Handshake flags (server, 16 bits) and client flags (32 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

/* Option reply types; errors have bit 31 set. */
#define NBD_REP_ACK               1
#define NBD_REP_SERVER            2
#define NBD_REP_INFO              3
#define NBD_REP_META_CONTEXT      4
#define NBD_REP_FLAG_ERROR        (UINT32_C(1) << 31)
#define NBD_REP_ERR_UNSUP         (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY        (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID       (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM      (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD      (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN       (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN      (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG       (NBD_REP_FLAG_ERROR | 9)

/* NBD_INFO types inside NBD_REP_INFO. */
#define NBD_INFO_EXPORT           0
#define NBD_INFO_NAME             1
#define NBD_INFO_DESCRIPTION      2
#define NBD_INFO_BLOCK_SIZE       3

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS        (1u << 0)
#define NBD_FLAG_READ_ONLY        (1u << 1)
#define NBD_FLAG_SEND_FLUSH       (1u << 2)
#define NBD_FLAG_SEND_FUA         (1u << 3)
#define NBD_FLAG_ROTATIONAL       (1u << 4)
#define NBD_FLAG_SEND_TRIM        (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF          (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN   (1u << 8)
#define NBD_FLAG_SEND_CACHE       (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO   (1u << 11)

/* Commands and command flags. */
#define NBD_CMD_READ              0
#define NBD_CMD_WRITE             1
#define NBD_CMD_DISC              2
#define NBD_CMD_FLUSH             3
#define NBD_CMD_TRIM              4
#define NBD_CMD_CACHE             5
#define NBD_CMD_WRITE_ZEROES      6
#define NBD_CMD_BLOCK_STATUS      7
#define NBD_CMD_FLAG_FUA          (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE      (1u << 1)
#define NBD_CMD_FLAG_DF           (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE      (1u << 3)

/* Structured reply chunks. */
#define NBD_REPLY_FLAG_DONE       (1u << 0)
#define NBD_REPLY_TYPE_NONE       0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR      ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)
#define NBD_REPLY_TYPE_IS_ERR(t)  (((t) & (1u << 15)) != 0)

/* base:allocation status bits. */
#define NBD_STATE_HOLE            (1u << 0)
#define NBD_STATE_ZERO            (1u << 1)

/* Error values on the wire. */
#define NBD_EPERM      1
#define NBD_EIO        5
#define NBD_ENOMEM     12
#define NBD_EINVAL     22
#define NBD_ENOSPC     28
#define NBD_EOVERFLOW  75
#define NBD_ENOTSUP    95
#define NBD_ESHUTDOWN  108

/* Limits: strings are at most 4096 bytes; option replies we accept are
 * small; READ/WRITE payloads are capped at 32 MiB (qemu's limit). */
#define NBD_MAX_STRING            4096
#define NBD_MAX_OPTION_REPLY      (64 * 1024)
#define NBD_MAX_PAYLOAD           (32 * 1024 * 1024)
#define NBD_MAX_EXTENTS_CHUNK     (4 + 8 * (1u << 20))

#define NBD_DEFAULT_PORT          10809

/* Newstyle greeting after NBDMAGIC: IHAVEOPT and the handshake flags. */
struct nbd_new_greeting
{
  uint64_t nbdmagic;
  uint64_t version;
  uint16_t gflags;
} __attribute__ ((packed));

/* Oldstyle greeting tail after the two magics. */
struct nbd_old_greeting_tail
{
  uint64_t size;
  uint32_t flags;
  char zeroes[124];
} __attribute__ ((packed));

struct nbd_option
{
  uint64_t magic;
  uint32_t option;
  uint32_t length;
} __attribute__ ((packed));

struct nbd_option_reply
{
  uint64_t magic;
  uint32_t option;
  uint32_t reply;
  uint32_t length;
} __attribute__ ((packed));

/* NBD_OPT_EXPORT_NAME reply (the 124 zero bytes are read separately). */
struct nbd_export_name_reply
{
  uint64_t size;
  uint16_t eflags;
} __attribute__ ((packed));

struct nbd_info_export
{
  uint16_t info;
  uint64_t size;
  uint16_t eflags;
} __attribute__ ((packed));

struct nbd_info_block_size
{
  uint16_t info;
  uint32_t minimum;
  uint32_t preferred;
  uint32_t maximum;
} __attribute__ ((packed));

struct nbd_request_header
{
  uint32_t magic;
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint32_t count;
} __attribute__ ((packed));

struct nbd_simple_reply
{
  uint32_t magic;
  uint32_t error;
  uint64_t cookie;
} __attribute__ ((packed));

/* A structured chunk header; its first 4 bytes overlap a simple reply's
 * magic, so the reader reads 16 bytes, looks at the magic, then reads
 * the 4 remaining bytes of a structured header. */
struct nbd_structured_reply
{
  uint32_t magic;
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint32_t length;
} __attribute__ ((packed));

struct nbd_block_descriptor
{
  uint32_t length;
  uint32_t status_flags;
} __attribute__ ((packed));

_Static_assert (sizeof (struct nbd_new_greeting) == 18, "greeting");
_Static_assert (sizeof (struct nbd_old_greeting_tail) == 136, "oldstyle");
_Static_assert (sizeof (struct nbd_option) == 16, "option");
_Static_assert (sizeof (struct nbd_option_reply) == 20, "option reply");
_Static_assert (sizeof (struct nbd_export_name_reply) == 10, "export name");
_Static_assert (sizeof (struct nbd_info_export) == 12, "info export");
_Static_assert (sizeof (struct nbd_info_block_size) == 14, "block size");
_Static_assert (sizeof (struct nbd_request_header) == 28, "request");
_Static_assert (sizeof (struct nbd_simple_reply) == 16, "simple reply");
_Static_assert (sizeof (struct nbd_structured_reply) == 20, "chunk");
_Static_assert (sizeof (struct nbd_block_descriptor) == 8, "extent");

#endif
