// Intel ISA-L: CRC-32 IEEE (reflected, the same polynomial and bit order as zlib and Go's
// crc32.ChecksumIEEE) with PCLMULQDQ, an order of magnitude faster than zlib on small records.
#include <isa-l/crc.h>
