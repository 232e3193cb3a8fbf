# bertd/codec.rb: BERT encode/decode for bertd's Ruby library, on top of Debian's ruby-bert.
# It fills the gaps in ruby-bert (the tags it cannot read, lossy float and odd integer forms) and
# reads and writes every tag OTP 25 emits; it never changes how ruby-bert itself behaves for code
# that calls BERT.encode/BERT.decode.
require 'bert'
require_relative 'types'

module BERTD
  module Codec
    # Tags ruby-bert 1.1.6 does not know; Erlang/OTP and bertd write them.
    NEW_FLOAT = 70
    BIT_BINARY = 77
    COMPRESSED = 80
    NEW_PID = 88
    NEW_PORT = 89
    NEWER_REFERENCE = 90
    REFERENCE = 101
    PORT = 102
    PID = 103
    NEW_FUN = 112
    EXPORT = 113
    NEW_REFERENCE = 114
    SMALL_ATOM = 115
    MAP = 116
    ATOM_UTF8 = 118
    SMALL_ATOM_UTF8 = 119
    V4_PORT = 120
    ATOM_TAGS = [BERT::Types::ATOM, SMALL_ATOM, ATOM_UTF8, SMALL_ATOM_UTF8].freeze
    INT32_MIN = -(1 << 31)
    INT32_MAX = (1 << 31) - 1
    UINT32_MAX = (1 << 32) - 1
    FLOAT_EXT_SIZE = 31

    # The forms a float can be written in: :ernie is FLOAT_EXT (tag 99), 31 bytes of "%.20e" text,
    # as term_to_binary(T, [{minor_version, 0}]) writes it and the only form ruby-bert (so every
    # Ernie-era Ruby program) reads; :new is NEW_FLOAT (tag 70), as term_to_binary/1 writes it.
    FLOAT_FORMATS = %i[ernie new].freeze

    # The form `format` names (a Symbol or String of FLOAT_FORMATS); ArgumentError for others.
    def self.float_format_of(format)
      sym = format.respond_to?(:to_sym) ? format.to_sym : format
      return sym if FLOAT_FORMATS.include?(sym)

      raise ArgumentError, "float_format must be one of #{FLOAT_FORMATS.map(&:inspect).join(', ')}, " \
                           "not #{format.inspect}"
    end

    # The form this library writes floats in unless told otherwise: :ernie.
    def self.float_format
      @float_format
    end

    def self.float_format=(format)
      @float_format = float_format_of(format)
    end

    @float_format = :ernie

    # Reads every tag OTP 25 writes outside the distribution header. ruby-bert's reader stops
    # at NEW_FLOAT, which is what term_to_binary/1 (and so bertd and most clients) writes.
    class Decode < BERT::Decode
      READERS = {
        NEW_FLOAT => :read_new_float, BERT::Types::FLOAT => :read_float, BIT_BINARY => :read_bit_binary,
        NEW_PID => :read_pid, PID => :read_pid, NEW_PORT => :read_port, PORT => :read_port,
        V4_PORT => :read_port, NEWER_REFERENCE => :read_reference, NEW_REFERENCE => :read_reference,
        REFERENCE => :read_old_reference, EXPORT => :read_export, NEW_FUN => :read_fun,
        MAP => :read_map
      }.freeze
      ATOM_ENCODINGS = {
        BERT::Types::ATOM => [2, Encoding::ISO_8859_1], SMALL_ATOM => [1, Encoding::ISO_8859_1],
        ATOM_UTF8 => [2, Encoding::UTF_8], SMALL_ATOM_UTF8 => [1, Encoding::UTF_8]
      }.freeze

      def read_any
        fail('Bad Magic') unless read_1 == MAGIC
        return read_compressed if peek_1 == COMPRESSED

        read_any_raw
      end

      def read_any_raw
        tag = peek_1
        return read_atom_of(tag) if ATOM_ENCODINGS.key?(tag)

        reader = READERS[tag]
        reader ? send(reader) : super
      end

      # True when every byte of the input has been read.
      def at_end?
        @peeked.empty? && @in.eof?
      end

      # ruby-bert reads `length` bytes without checking that they were there; a short
      # frame must be an error, not a silently shorter binary.
      def read(length)
        data = begin
          super
        rescue TypeError # ruby-bert appends nil at end of input
          nil
        end
        fail('Truncated BERT') if data.nil? || data.bytesize < length
        data
      end

      # A tuple whose first element is `bert` but which is not one of the complex types
      # (for instance `{bert}`) would make ruby-bert read past its end; keep it a tuple.
      def read_tuple(arity)
        return super if arity >= 2

        tuple = BERT::Tuple.new
        arity.times { tuple << read_any_raw }
        tuple
      end

      # ruby-bert takes whatever String#to_f makes of the text (0.0 for garbage); a FLOAT_EXT must
      # hold a number. Both Erlang's "%.20e" and ruby-bert's own "%15.15e" text read exactly.
      def read_float
        read_1
        text = read(FLOAT_EXT_SIZE).delete("\0")
        value = Float(text, exception: false)
        fail("Bad FLOAT_EXT text #{text.inspect}") unless value&.finite?
        value
      end

      def read_new_float
        read_1
        value = read(8).unpack1('G')
        fail('NEW_FLOAT_EXT holds an infinity or NaN, which Erlang has no term for') unless value.finite?
        value
      end

      private

      def read_atom_of(tag)
        read_1
        size_bytes, encoding = ATOM_ENCODINGS[tag]
        to_atom(read(size_bytes == 1 ? read_1 : read_2), encoding)
      end

      def to_atom(bytes, encoding)
        bytes.force_encoding(encoding)
        fail("Atom is not valid #{encoding}") unless bytes.valid_encoding?
        bytes = bytes.encode(Encoding::UTF_8) unless encoding == Encoding::UTF_8 || bytes.ascii_only?
        bytes.to_sym
      end

      # The node name inside a pid, port or reference: an atom of any of the four kinds.
      def read_node
        fail("Node name is not an atom (tag #{peek_1})") unless ATOM_TAGS.include?(peek_1)

        read_any_raw
      end

      def read_8
        read(8).unpack1('Q>')
      end

      def read_bit_binary
        read_1
        size = read_4
        bits = read_1
        return '' if size.zero? && bits.zero?
        fail("Bad BIT_BINARY: #{size} bytes, #{bits} bits") if size.zero? || !(1..8).cover?(bits)

        data = read(size)
        bits == 8 ? data : BitBinary.new(data, bits)
      end

      def read_pid
        tag = read_1
        node = read_node
        id = read_4
        serial = read_4
        Pid.new(node, id, serial, tag == NEW_PID ? read_4 : read_1)
      end

      def read_port
        tag = read_1
        node = read_node
        id = tag == V4_PORT ? read_8 : read_4
        Port.new(node, id, tag == PORT ? read_1 : read_4)
      end

      def read_reference
        tag = read_1
        count = read_2
        fail("Reference with #{count} id words") unless (1..5).cover?(count)

        node = read_node
        creation = tag == NEWER_REFERENCE ? read_4 : read_1
        Ref.new(node, creation, Array.new(count) { read_4 })
      end

      def read_old_reference
        read_1
        node = read_node
        id = read_4
        Ref.new(node, read_1, [id])
      end

      def read_export
        read_1
        mod = read_any_raw
        fun = read_any_raw
        arity = read_any_raw
        fail('Bad EXPORT_EXT') unless mod.is_a?(Symbol) && fun.is_a?(Symbol) && arity.is_a?(Integer)

        Export.new(mod, fun, arity)
      end

      # Size counts itself and the fields after it (at least 29 bytes of fixed fields); they are
      # read from those bytes alone, which must be used up exactly.
      def read_fun
        read_1
        size = read_4
        fail("NEW_FUN_EXT of #{size} bytes") if size < 29

        body = read(size - 4)
        inner = Decode.new(StringIO.new(body))
        fields = inner.fun_fields
        fail("NEW_FUN_EXT says #{size} bytes, holds more") unless inner.at_end?

        Fun.new([NEW_FUN, size].pack('CN') + body, fields)
      end

      protected

      def fun_fields
        fields = { arity: read_1, uniq: read(16), index: read_4 }
        free_count = read_4
        %i[module old_index old_uniq pid].each { |name| fields[name] = read_any_raw }
        unless fields[:module].is_a?(Symbol) && fields[:old_index].is_a?(Integer) &&
               fields[:old_uniq].is_a?(Integer) && fields[:pid].is_a?(Pid)
          fail('Bad NEW_FUN_EXT')
        end
        fail("NEW_FUN_EXT closes over #{free_count} values: more than its bytes") if free_count > @in.size
        fields.update(free: Array.new(free_count) { read_any_raw })
      end

      private

      def read_map
        read_1
        count = read_4
        map = {}
        count.times do
          key = read_any_raw
          map[key] = read_any_raw
        end
        map
      end

      def read_compressed
        require 'zlib'
        read_1
        size = read_4
        plain = Zlib::Inflate.inflate(@in.read)
        fail('Bad compressed BERT') unless plain.bytesize == size
        Decode.new(StringIO.new([MAGIC].pack('C') + plain)).read_any
      end
    end

    # Writes every term the way term_to_binary/1 does (with {minor_version, 0} for floats in
    # the :ernie form), so that values survive a round trip exactly: ruby-bert's own float text
    # keeps only 16 digits, Erlang's 21.
    class Encode < BERT::Encode
      WRITERS = {
        Pid => :write_pid, Port => :write_port, Ref => :write_reference, Export => :write_export,
        BitBinary => :write_bit_binary, Fun => :write_fun
      }.freeze

      def initialize(out, float_format = Codec.float_format)
        super(out)
        @float_ext = Codec.float_format_of(float_format) == :ernie
      end

      # The whole dispatch is here: ruby-bert's names Fixnum/Bignum, deprecated in Ruby 3.
      def write_any_raw(obj)
        case obj
        when Symbol then write_symbol(obj)
        when Integer then write_integer(obj)
        when Float then write_float_term(obj)
        when BERT::Tuple then write_tuple(obj)
        when Array then write_list(obj)
        when String then write_binary(obj)
        else
          writer = WRITERS[obj.class]
          writer ? send(writer, obj) : fail(obj)
        end
      end

      def write_integer(num)
        if num >= 0 && num < 256
          write_1 SMALL_INT
          write_1 num
        elsif num >= INT32_MIN && num <= INT32_MAX
          write_1 INT
          out.write([num].pack('l>'))
        else
          write_bignum(num)
        end
      end

      def write_float_term(float)
        raise "Cannot encode to erlang external format: Erlang has no float #{float}" unless float.finite?

        if @float_ext
          write_1 FLOAT
          out.write(format('%.20e', float).ljust(FLOAT_EXT_SIZE, "\0"))
        else
          write_1 NEW_FLOAT
          out.write([float].pack('G'))
        end
      end

      # Plain ASCII atoms keep ruby-bert's ATOM tag; others need a UTF-8 tag to mean
      # the same atom on the Erlang side.
      def write_symbol(sym)
        data = sym.to_s
        return super if data.ascii_only?

        data = data.encode(Encoding::UTF_8).b
        if data.bytesize < 256
          write_1 SMALL_ATOM_UTF8
          write_1 data.bytesize
        else
          write_1 ATOM_UTF8
          write_2 data.bytesize
        end
        write_string data
      end

      def write_binary(data)
        super(data.to_s.b)
      end

      private

      def write_u32s(*values)
        values.each do |v|
          raise "Cannot encode to erlang external format: #{v.inspect} is not a 32-bit word" \
            unless v.is_a?(Integer) && v.between?(0, UINT32_MAX)
        end
        out.write(values.pack('N*'))
      end

      def write_node(node)
        fail(node) unless node.is_a?(Symbol)

        write_symbol(node)
      end

      def write_pid(pid)
        write_1 NEW_PID
        write_node(pid.node)
        write_u32s(pid.id, pid.serial, pid.creation)
      end

      def write_port(port)
        id = port.id
        fail(port) unless id.is_a?(Integer) && id.between?(0, (1 << 64) - 1)
        write_1(id > UINT32_MAX ? V4_PORT : NEW_PORT)
        write_node(port.node)
        id > UINT32_MAX ? out.write([id].pack('Q>')) : write_u32s(id)
        write_u32s(port.creation)
      end

      def write_reference(ref)
        ids = Array(ref.ids)
        fail(ref) unless (1..5).cover?(ids.size)
        write_1 NEWER_REFERENCE
        write_2 ids.size
        write_node(ref.node)
        write_u32s(ref.creation, *ids)
      end

      def write_export(export)
        fail(export) unless export.arity.is_a?(Integer) && export.arity.between?(0, 255)
        write_1 EXPORT
        write_node(export.module.to_sym)
        write_node(export.function.to_sym)
        write_integer(export.arity)
      end

      def write_bit_binary(bits)
        data = bits.data.to_s.b
        fail(bits) unless data.bytesize.positive? && bits.bits.is_a?(Integer) && (1..8).cover?(bits.bits)
        return write_binary(data) if bits.bits == 8 # whole bytes: a binary, as in Erlang

        write_1 BIT_BINARY
        write_4 data.bytesize
        write_1 bits.bits
        # Bits past the significant ones are zero in Erlang's bytes.
        last = data.getbyte(-1) & (0xFF << (8 - bits.bits)) & 0xFF
        write_string(data.byteslice(0, data.bytesize - 1) + [last].pack('C'))
      end

      # Opaque: written back exactly as it was read (floats it closed over keep their form).
      def write_fun(fun)
        write_string(fun.raw)
      end
    end

    module_function

    # Ruby object -> BERT bytes (Hash, nil, true, false, Time, Regexp become complex types).
    # float_format: :ernie (FLOAT_EXT, the default unless Codec.float_format says otherwise) or
    # :new (NEW_FLOAT).
    def encode(obj, float_format: Codec.float_format)
      io = StringIO.new(+'', 'wb')
      Encode.new(io, float_format).write_any(BERT::Encoder.convert(obj))
      io.string
    end

    # BERT bytes -> Ruby object: binaries are Strings (ASCII-8BIT), atoms Symbols, tuples
    # BERT::Tuple, lists Arrays. Raises RuntimeError on a malformed term.
    def decode(bytes)
      io = StringIO.new(bytes.b)
      value = Decode.new(io).read_any
      fail('Trailing bytes after BERT') unless io.eof?
      value
    end

    # One BERP frame: 4-byte big-endian length, then the BERT.
    def frame(obj, float_format: Codec.float_format)
      body = encode(obj, float_format: float_format)
      [body.bytesize].pack('N') + body
    end
  end
end
