/**
 * Netlink attribute (TLV) encoding for the parts of rtnetlink messages that netlink@0.3.0 leaves as
 * raw buffers: IFLA_LINKINFO, IFLA_INFO_DATA and veth's VETH_INFO_PEER.
 * Layout: u16 length (header + payload, unpadded), u16 type, payload, zero padding to 4 bytes,
 * all in host byte order.
 */
import { endianness } from "node:os";

const LE = endianness() === "LE";

const HEADER = 4;
/** Marks an attribute whose payload is itself a list of attributes (NLA_F_NESTED). */
const NLA_F_NESTED = 1 << 15;
const TYPE_MASK = (1 << 14) - 1;

const writeU16 = (b: Buffer, v: number, off: number): number =>
  LE ? b.writeUInt16LE(v, off) : b.writeUInt16BE(v, off);
const readU16 = (b: Buffer, off: number): number => (LE ? b.readUInt16LE(off) : b.readUInt16BE(off));
const align4 = (n: number): number => (n + 3) & ~3;

export function attr(type: number, payload: Buffer): Buffer {
  const len = HEADER + payload.length;
  if (len > 0xffff) throw new RangeError(`netlink attribute ${type & TYPE_MASK} too long (${len} bytes)`);
  const buf = Buffer.alloc(align4(len));
  writeU16(buf, len, 0);
  writeU16(buf, type, 2);
  payload.copy(buf, HEADER);
  return buf;
}

/** NUL-terminated, as the kernel's NLA_STRING / NLA_NUL_STRING policies expect. */
export const attrString = (type: number, s: string): Buffer => attr(type, Buffer.from(`${s}\0`));

export function attrU32(type: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  if (LE) b.writeUInt32LE(v, 0);
  else b.writeUInt32BE(v, 0);
  return attr(type, b);
}

/** Children are already padded, so their concatenation is a valid attribute stream. */
export const attrNested = (type: number, children: Buffer[]): Buffer =>
  attr(type | NLA_F_NESTED, Buffer.concat(children));

/** Attributes of a stream by type (flags stripped); the last one of a repeated type wins. */
export function parseAttrs(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 0;
  while (off + HEADER <= buf.length) {
    const len = readU16(buf, off);
    if (len < HEADER || off + len > buf.length) break;
    out.set(readU16(buf, off + 2) & TYPE_MASK, buf.subarray(off + HEADER, off + len));
    off += align4(len);
  }
  return out;
}

/** A string payload, tolerating a missing terminator. */
export function payloadString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.toString("utf8", 0, nul === -1 ? b.length : nul);
}
