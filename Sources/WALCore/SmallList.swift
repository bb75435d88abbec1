/// A list whose first element is held inline: copying or emptying one with a single element
/// allocates nothing. A batch of the log almost always lies in one segment, so its cuts and the
/// sizes it brings segments to are one element each, and an array for them was an allocation
/// per seal.
///
/// Public and inlinable for the store's transactions, whose writes are almost always one: an
/// array of their offsets was an allocation per command.
public struct SmallList<Element>: RandomAccessCollection {
    @usableFromInline var head: Element?
    @usableFromInline var tail: [Element] = []

    @inlinable public init() {}

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { self.head == nil ? 0 : 1 + self.tail.count }

    @inlinable public subscript(position: Int) -> Element { position == 0 ? self.head! : self.tail[position - 1] }

    @inlinable public mutating func append(_ element: Element) {
        if self.head == nil { self.head = element } else { self.tail.append(element) }
    }

    /// Replace the last element that `matches`, or append `element`.
    @inlinable public mutating func replaceLast(where matches: (Element) -> Bool, with element: Element) {
        if !self.tail.isEmpty, matches(self.tail[self.tail.count - 1]) {
            self.tail[self.tail.count - 1] = element
        } else if self.tail.isEmpty, let head = self.head, matches(head) {
            self.head = element
        } else {
            self.append(element)
        }
    }

    @inlinable public mutating func removeAll() {
        self.head = nil
        if !self.tail.isEmpty { self.tail = [] }
    }
}
