# bertd/codec.rb: BERT encode/decode for bertd's Ruby library, on top of Debian's ruby-bert.
# It only fills gaps in ruby-bert (tags it cannot read, lossy float and odd integer forms);
# it never changes how ruby-bert itself behaves for code that calls BERT.encode/BERT.decode.
require 'bert'

module BERTD
  module Codec
    # Tags ruby-bert 1.1.6 does not know; Erlang/OTP and bertd write them.
    NEW_FLOAT = 70
    SMALL_ATOM = 115
    ATOM_UTF8 = 118
    SMALL_ATOM_UTF8 = 119
    MAP = 116
    COMPRESSED = 80
    INT32_MIN = -(1 << 31)
    INT32_MAX = (1 << 31) - 1

    # Reads every tag of PROTOCOL.md. ruby-bert's reader stops at NEW_FLOAT, which is
    # what term_to_binary/1 (and so bertd and most clients) writes for every float.
    class Decode < BERT::Decode
      def read_any
        fail('Bad Magic') unless read_1 == MAGIC
        return read_compressed if peek_1 == COMPRESSED

        read_any_raw
      end

      def read_any_raw
        case peek_1
        when NEW_FLOAT then read_1 && read(8).unpack1('G')
        when SMALL_ATOM then read_1 && to_atom(read(read_1), Encoding::ISO_8859_1)
        when ATOM_UTF8 then read_1 && to_atom(read(read_2), Encoding::UTF_8)
        when SMALL_ATOM_UTF8 then read_1 && to_atom(read(read_1), Encoding::UTF_8)
        when MAP then read_map
        when ATOM then read_1 && to_atom(read(read_2), Encoding::ISO_8859_1)
        else super
        end
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

      private

      def to_atom(bytes, encoding)
        bytes.force_encoding(encoding)
        bytes = bytes.encode(Encoding::UTF_8) unless encoding == Encoding::UTF_8 || bytes.ascii_only?
        bytes.to_sym
      end

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

    # Writes integers and floats the way term_to_binary/1 does, so that a float survives a
    # round trip exactly (ruby-bert's 31-byte text form keeps only 16 digits).
    class Encode < BERT::Encode
      # The whole dispatch is here: ruby-bert's names Fixnum/Bignum, deprecated in Ruby 3.
      def write_any_raw(obj)
        case obj
        when Symbol then write_symbol(obj)
        when Integer then write_integer(obj)
        when Float then write_new_float(obj)
        when BERT::Tuple then write_tuple(obj)
        when Array then write_list(obj)
        when String then write_binary(obj)
        else fail(obj)
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

      def write_new_float(float)
        write_1 NEW_FLOAT
        out.write([float].pack('G'))
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
    end

    module_function

    # Ruby object -> BERT bytes (Hash, nil, true, false, Time, Regexp become complex types).
    def encode(obj)
      Encode.encode(BERT::Encoder.convert(obj))
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
    def frame(obj)
      body = encode(obj)
      [body.bytesize].pack('N') + body
    end
  end
end
