# bertd/rpc10.rb: BERT-RPC 1.0's info packets as the Ruby handler and client write and read them
# (doc/info-packets.md): stream chunks (<u32 N><N bytes>, ended by <u32 0>), {info, stream, []},
# {info, cache, Options}, {info, valid, []}. It never writes an empty chunk inside a stream (four
# zero bytes end it) and never reads a chunk past the limit it was given.
require_relative 'codec'

module BERTD
  module RPC10
    # A streamed answer's chunks are at most this long (bertd refuses chunks over limits.max_frame).
    CHUNK = 256 * 1024
    END_OF_STREAM = "\0\0\0\0".b.freeze
    STREAM_INFO = BERT::Tuple[:info, :stream, []]
    VALID_INFO = BERT::Tuple[:info, :valid, []]
    ACCESS = %i[public private].freeze

    # A stream that broke its framing: cut short, a chunk over the limit, a chunk that is not a String.
    class StreamError < StandardError; end

    module_function

    # The Options of {info, cache, Options} for a handler's answer; ArgumentError when they are wrong.
    def cache_options(access: :private, expiration: nil, validation: nil)
      access = access.to_sym if access.is_a?(String)
      unless ACCESS.include?(access)
        raise ArgumentError, "cache access must be :public or :private, not #{access.inspect}"
      end
      if expiration.nil? && validation.nil?
        raise ArgumentError, 'cache needs expiration: Seconds, validation: Token or both'
      end

      options = [BERT::Tuple[:access, access]]
      unless expiration.nil?
        unless expiration.is_a?(Integer) && expiration >= 0
          raise ArgumentError,
                "cache expiration must be an Integer of seconds >= 0 (0: for ever), not #{expiration.inspect}"
        end

        options << BERT::Tuple[:expiration, expiration]
      end
      options << BERT::Tuple[:validation, token(validation)] unless validation.nil?
      options
    end

    def token(value)
      raise ArgumentError, "a validation token must be a String, not #{value.class}" unless value.is_a?(String)

      value.b
    end

    # A Hash of a cache info's options ({access: :public, expiration: 60, validation: 'tok'}).
    # Raises ArgumentError for a shape doc/info-packets.md does not allow.
    def read_cache_options(options)
      unless options.is_a?(Array)
        raise ArgumentError, "{info, cache, Options}: Options must be a list, not #{options.inspect}"
      end

      options.each_with_object({}) do |o, out|
        unless o.is_a?(Array) && o.size == 2 && o[0].is_a?(Symbol)
          raise ArgumentError, "{info, cache, Options}: an option must be {Key, Value}, not #{o.inspect}"
        end

        key, value = o
        good = case key
               when :access then ACCESS.include?(value)
               when :expiration then value.is_a?(Integer) && value >= 0
               when :validation then value.is_a?(String)
               else true # an option this library does not know is kept, not refused
               end
        raise ArgumentError, "{info, cache, Options}: bad #{key}: #{value.inspect}" unless good

        out[key] = value
      end
    end

    # Yields the chunks of `source` as they go on the wire: non-empty Strings of at most `size`
    # bytes. `source` is anything with #each (an Enumerator, an Array) or an IO (read in pieces).
    def each_piece(source, size)
      return enum_for(:each_piece, source, size) unless block_given?

      if source.respond_to?(:read)
        while (data = source.read(size))
          yield data.b unless data.empty?
        end
        return
      end
      source.each do |item|
        raise StreamError, "a stream's chunks must be Strings, not #{item.class}" unless item.is_a?(String)

        item = item.b
        0.step(item.bytesize - 1, size) { |at| yield item.byteslice(at, size) }
      end
    end

    def chunk(piece)
      [piece.bytesize].pack('N') << piece
    end

    # Reads one chunk with `read_exactly.call(n)` (fewer bytes only at end of input); nil for the
    # zero header that ends the stream. The one chunk reader: the handler's request streams and the
    # client's streamed answers both go through it. `limit_name` names `max_chunk` in the error.
    def read_chunk(read_exactly, max_chunk, limit_name: 'the limit')
      head = read_exactly.call(4)
      raise StreamError, 'the stream was cut short: end of input before its zero-length end' if head.bytesize < 4

      n = head.unpack1('N')
      return nil if n.zero?
      raise StreamError, "a stream chunk of #{n} bytes is over #{limit_name} (#{max_chunk})" if max_chunk && n > max_chunk

      data = read_exactly.call(n)
      raise StreamError, "the stream was cut short inside a chunk (#{data.bytesize} of #{n} bytes)" if data.bytesize < n

      data
    end
  end

  # An answer sent as a stream: return `Ernie.stream(chunks, reply: [])` (or an Enumerator) from a
  # function. `chunks`: an Enumerator, an Array of Strings or an IO.
  class Stream
    attr_reader :chunks, :reply, :chunk_size

    def initialize(chunks, reply: [], chunk_size: RPC10::CHUNK)
      unless chunk_size.is_a?(Integer) && chunk_size.positive?
        raise ArgumentError, 'chunk_size must be a positive Integer'
      end

      @chunks = chunks
      @reply = reply
      @chunk_size = chunk_size
    end

    def pieces
      RPC10.each_piece(@chunks, @chunk_size)
    end
  end

  # A streamed request's chunks, read from the handler's input as the function iterates
  # (Ernie.stream_in). What the function leaves unread is dropped once it returns.
  class RequestStream
    include Enumerable

    attr_reader :bytes

    def initialize(input)
      @input = input
      @done = false
      @broken = false
      @bytes = 0
    end

    def each
      return enum_for(:each) unless block_given?

      while (data = next_chunk)
        yield data
      end
      self
    end

    # All the remaining bytes at once (iterate instead to keep memory bounded).
    def read
      out = String.new(encoding: Encoding::BINARY)
      each { |c| out << c }
      out
    end

    def done?
      @done
    end

    # Reads the rest and drops it; false when the stream was cut short.
    def drain
      each { |_| nil }
      true
    rescue RPC10::StreamError, IOError, SystemCallError
      false
    end

    private

    def next_chunk
      return nil if @done
      raise RPC10::StreamError, "the request's stream was cut short" if @broken

      data = RPC10.read_chunk(->(n) { @input.read(n) || ''.b }, nil)
      @done = data.nil?
      @bytes += data.bytesize if data
      data
    rescue RPC10::StreamError
      @broken = true
      raise
    end
  end
end
