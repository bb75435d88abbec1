import NIOCore

/// Splits the control socket's input into lines (one JSON request each), refusing a line longer
/// than `maxLineBytes` before buffering more of it.
struct ControlLineDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxLineBytes: Int

    struct LineTooLong: Error {}

    mutating func decode(buffer: inout ByteBuffer) throws -> ByteBuffer? {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > self.maxLineBytes { throw LineTooLong() }
            return nil
        }
        let length = newline - view.startIndex
        guard length <= self.maxLineBytes else { throw LineTooLong() }
        let line = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: 1)
        return line
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ByteBuffer? {
        try self.decode(buffer: &buffer)
    }
}
