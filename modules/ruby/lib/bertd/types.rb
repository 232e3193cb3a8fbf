# bertd/types.rb: Ruby values for the Erlang terms Ruby has no type of its own for: pids, ports,
# references, `fun M:F/A`, local funs and bit strings. BERTD::Codec reads and writes them; none of
# them ever changes on the way through (a local fun, which Ruby cannot run, keeps its exact bytes).
module BERTD
  # A process identifier (NEW_PID_EXT; the older PID_EXT reads as one too). node is a Symbol.
  Pid = Struct.new(:node, :id, :serial, :creation)

  # A port (NEW_PORT_EXT, or V4_PORT_EXT when id needs more than 32 bits).
  Port = Struct.new(:node, :id, :creation)

  # A reference (NEWER_REFERENCE_EXT): ids is an Array of 1 to 5 32-bit words.
  Ref = Struct.new(:node, :creation, :ids)

  # An external fun, `fun Module:Function/Arity` (EXPORT_EXT).
  Export = Struct.new(:module, :function, :arity)

  # A bit string whose last byte holds only `bits` (1..7) significant high bits, such as <<1:3>>
  # (BERTD::BitBinary.new("\x20".b, 3)). data is a binary String.
  BitBinary = Struct.new(:data, :bits)

  # A local fun (NEW_FUN_EXT). Ruby cannot call it: it is an opaque value that encodes back to
  # exactly the bytes it was decoded from (`raw`, from the tag on); two funs are equal when those
  # bytes are. The other readers say what the bytes hold: Erlang prints it as
  # #Fun<module.old_index.old_uniq>, and `free` is the Array of values it closed over.
  class Fun
    FIELDS = %i[module arity index old_index old_uniq uniq pid free].freeze
    attr_reader :raw, *FIELDS

    def initialize(raw, fields)
      @raw = raw.b.freeze
      FIELDS.each { |name| instance_variable_set("@#{name}", fields.fetch(name)) }
      freeze
    end

    # The Fun of raw NEW_FUN_EXT bytes (tag 112 first). Raises RuntimeError for anything else.
    def self.from_bytes(raw)
      value = Codec.decode([Codec::Decode::MAGIC].pack('C') + raw.b)
      raise 'not a NEW_FUN_EXT term' unless value.is_a?(Fun)

      value
    end

    def ==(other)
      other.is_a?(Fun) && raw == other.raw
    end
    alias eql? ==

    def hash
      raw.hash
    end

    def inspect
      "#<BERTD::Fun #{@module}.#{old_index}.#{old_uniq} arity=#{arity} free=#{free.inspect}>"
    end
    alias to_s inspect
  end
end
