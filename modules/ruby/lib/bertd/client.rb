# bertd/client.rb: a BERT-RPC client for bertd (and any BERT-RPC server), shaped like the bertrpc gem:
# `BERTD::Service.new(host, port).call.ext.add(1, 2)`. It never answers one request with another's
# reply: after a timeout or a broken answer the connection is closed, never reused.
# BERT-RPC 1.0 (doc/info-packets.md): streamed requests (stream_in:), streamed answers and cache
# infos (accept:, validation: give a BERTD::Answer), callbacks (callback: on a cast).
require 'io/wait'
require 'socket'
require_relative 'codec'
require_relative 'rpc10'

module BERTD
  # Base of every error this client raises.
  class Error < StandardError; end

  # The request cannot be sent as asked (bad option, argument that BERT cannot carry).
  class InvalidRequest < Error; end

  # A bad option to Service#call / #cast.
  class InvalidOption < InvalidRequest; end

  # No connection, or it broke before a whole answer came back.
  class ConnectionError < Error
    attr_reader :host, :port

    def initialize(host, port, reason)
      @host = host
      @port = port
      super("#{host}:#{port}: #{reason}")
    end
  end

  # No whole answer within the timeout. The request may still run on the server.
  class ReadTimeoutError < ConnectionError
    attr_reader :timeout

    def initialize(host, port, timeout)
      @timeout = timeout
      super(host, port, "no answer within #{timeout}s")
    end
  end

  # The server answered something that is not a BERT-RPC answer.
  class InvalidReply < Error; end

  # The stand-in for the remote exception, as the bertrpc gem's `original_exception` gives it.
  class RemoteError < StandardError; end

  # An `{error, {Type, Code, Class, Detail, Backtrace}}` answer. `message` is Detail exactly
  # (e.g. "No such module 'failboat'"); the local backtrace stays the Ruby one.
  class RPCError < Error
    attr_reader :type, :code, :remote_class, :remote_backtrace

    def initialize(type, code, remote_class, detail, remote_backtrace)
      @type = type
      @code = code
      @remote_class = remote_class
      @remote_backtrace = remote_backtrace
      super(detail)
    end

    alias klass remote_class

    # bertrpc gem compatibility: an exception that reads like the remote one.
    def original_exception
      err = RemoteError.new("#{remote_class}: #{message}")
      err.set_backtrace(remote_backtrace)
      err
    end
  end

  class ProtocolError < RPCError; end
  class ServerError < RPCError; end
  class UserError < RPCError; end
  class ProxyError < RPCError; end

  ERROR_TYPES = { protocol: ProtocolError, server: ServerError, user: UserError, proxy: ProxyError }.freeze
  PRIORITIES = %i[high low].freeze
  OPTIONS = %i[priority cache stream_in accept validation callback].freeze
  # At most this many infos may come before one answer (a server that sends nothing else is broken).
  MAX_INFOS = 64

  # Where requests go. One TCP connection per request by default, as the bertrpc gem does;
  # `persistent: true` keeps one connection open (answers come back in request order).
  class Service
    attr_reader :host, :port, :timeout, :connect_timeout, :float_format
    attr_accessor :chunk_size, :max_chunk

    # timeout: seconds for the whole answer (nil waits for ever); connect_timeout defaults to it.
    # float_format: the form of the requests' floats, :ernie (FLOAT_EXT, what ruby-bert reads:
    # the default, see BERTD::Codec.float_format) or :new (NEW_FLOAT). Answers are read in either.
    # chunk_size cuts a streamed request's chunks (keep it at most the server's limits.max_frame);
    # max_chunk refuses a streamed answer's chunk longer than that (an InvalidReply).
    def initialize(host, port, timeout: nil, connect_timeout: nil, persistent: false, float_format: nil,
                   chunk_size: RPC10::CHUNK, max_chunk: 64 << 20)
      @chunk_size = chunk_size
      @max_chunk = max_chunk
      @float_format = Codec.float_format_of(float_format || Codec.float_format)
      @host = host
      @port = port
      @timeout = timeout
      @connect_timeout = connect_timeout || timeout
      @persistent = persistent
      @socket = nil
      @lock = Mutex.new
    end

    def persistent?
      @persistent
    end

    # svc.call.mod.fun(*args) -> result. Options: priority: :high|:low, cache: [:validation, token];
    # BERT-RPC 1.0: stream_in: chunks, accept: [:stream, :cache], validation: token (see #request).
    def call(**options)
      Request.new(self, :call, options)
    end

    # svc.cast.mod.fun(*args) -> nil once the server has taken the request. callback: [host_port,
    # mod, fun, args] has the server cast {cast, Mod, Fun, Args ++ [Result]} there afterwards.
    def cast(**options)
      Request.new(self, :cast, options)
    end

    # The explicit form, for names that are not Ruby method names:
    # svc.request(:call, :ext, :add, [1, 2], priority: :low).
    # stream_in: (an Enumerable of Strings or an IO) streams the request; accept: and validation:
    # make the result a BERTD::Answer; with a block, a streamed answer's chunks are yielded to it.
    def request(kind, mod, fun, args, **options, &block)
      raise InvalidRequest, "kind must be :call or :cast, not #{kind.inspect}" unless %i[call cast].include?(kind)

      payload = frames(infos(kind, options) + [BERT::Tuple[kind, mod.to_sym, fun.to_sym, args]])
      perform(kind, payload, options, &block)
    end

    # Sends `payload` (BERT bytes, not checked: it may be malformed) as the request frame after the
    # options' infos, and returns the answer interpreted as for a call (nil for {noreply}). For tools
    # and tests.
    def request_raw(payload, **options, &block)
      payload = frames(infos(:call, options)) + [payload.bytesize].pack('N') + payload.b
      perform(:call, payload, options, &block)
    end

    # Closes the persistent connection, if any (a later request opens a new one).
    def close
      @lock.synchronize { drop_socket }
    end

    private

    def infos(kind, options)
      unknown = options.keys - OPTIONS
      unless unknown.empty?
        raise InvalidOption, "unknown option(s) #{unknown.inspect}; valid: #{OPTIONS.map(&:inspect).join(', ')}"
      end

      infos = []
      if options.key?(:priority)
        priority = options[:priority]
        raise InvalidOption, 'priority must be :high or :low' unless PRIORITIES.include?(priority)

        infos << BERT::Tuple[:info, :priority, [priority]]
      end
      if options.key?(:cache)
        cache = options[:cache]
        unless cache.is_a?(Array) && cache.size == 2 && cache[0] == :validation && cache[1].is_a?(String)
          raise InvalidOption, 'cache must be [:validation, String]'
        end

        infos << BERT::Tuple[:info, :cache, cache]
      end
      infos + rpc10_infos(kind, options)
    end

    def rpc10_infos(kind, options)
      infos = []
      if options.key?(:accept)
        kinds = Array(options[:accept]).map { |k| k.is_a?(String) ? k.to_sym : k }
        unless (kinds - %i[stream cache]).empty?
          raise InvalidOption, "accept must name :stream and/or :cache, not #{options[:accept].inspect}"
        end

        infos << BERT::Tuple[:info, :accept, kinds]
      end
      if options.key?(:validation)
        token = options[:validation]
        raise InvalidOption, "validation must be a String token, not #{token.class}" unless token.is_a?(String)

        infos << BERT::Tuple[:info, :cache, [BERT::Tuple[:validation, token.b]]]
      end
      infos << callback_info(kind, options[:callback]) if options.key?(:callback)
      infos << RPC10::STREAM_INFO if options.key?(:stream_in)
      infos
    end

    def callback_info(kind, callback)
      unless kind == :cast
        raise InvalidOption, 'callback: goes with a cast (the server answers {noreply} and casts the result)'
      end

      service, mod, fun, args = callback if callback.is_a?(Array) && callback.size == 4
      unless service.is_a?(String) && service.include?(':') && mod && fun && args.is_a?(Array)
        raise InvalidOption, "callback must be ['host:port', mod, fun, args], not #{callback.inspect}"
      end

      BERT::Tuple[:info, :callback, [BERT::Tuple[:service, service.b], BERT::Tuple[:mfa, mod.to_sym, fun.to_sym, args]]]
    end

    def perform(kind, payload, options, &block)
      chunks = options.key?(:stream_in) ? BERTD::Stream.new(options[:stream_in], chunk_size: @chunk_size) : nil
      answer = @lock.synchronize do
        socket = take_socket
        begin
          got = exchange(socket, payload, chunks)
        rescue StandardError
          # After a timeout the late answer would be read as the next request's: never reuse.
          close_quietly(socket)
          raise
        end
        got.streamed? ? got.attach(self, socket) : give_back(socket, locked: true)
        got
      end
      answer.value = interpret(kind, answer.term)
      answer.each(&block) if block && answer.streamed?
      return answer if options.key?(:accept) || options.key?(:validation)

      answer.streamed? ? answer.read : answer.value # a server that streams to a client that did not ask: gathered
    end

    # The kept connection if it is still good, else a new one (the caller owns it). Under @lock.
    def take_socket
      socket = @socket
      @socket = nil
      close_quietly(socket) if socket && stale?(socket)
      socket = nil if socket&.closed?
      socket || connect
    end

    # A connection whose exchange ended in step: kept when persistent (and none is kept yet).
    def give_back(socket, locked: false)
      keep = lambda do
        if @persistent && @socket.nil?
          @socket = socket
        else
          close_quietly(socket)
        end
      end
      locked ? keep.call : @lock.synchronize(&keep)
      nil
    end

    def close_quietly(socket)
      socket&.close
    rescue IOError, SystemCallError
      nil
    end

    # One chunk of a streamed answer, nil at its end (within `timeout` seconds per chunk).
    def read_stream_chunk(socket)
      deadline = @timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout)
      cut = 'the streamed answer was cut short: the server closed the connection'
      RPC10.read_chunk(->(n) { read_exactly(socket, n, deadline, cut) }, @max_chunk, limit_name: 'max_chunk')
    rescue RPC10::StreamError => e
      raise InvalidReply, "a streamed answer's chunk: #{e.message}"
    end

    def frames(terms)
      terms.map { |term| Codec.frame(term, float_format: @float_format) }.join
    rescue StandardError => e
      raise InvalidRequest, "cannot encode request: #{e.message}"
    end

    def drop_socket
      close_quietly(@socket)
      @socket = nil
    end

    # A kept connection that the server closed (or that has unread bytes) cannot be reused.
    def stale?(socket)
      return false unless socket.wait_readable(0)

      true
    rescue IOError, SystemCallError
      true
    end

    def connect
      Socket.tcp(@host, @port, connect_timeout: @connect_timeout)
    rescue Errno::ETIMEDOUT
      raise ConnectionError.new(@host, @port, "connect timed out after #{@connect_timeout}s")
    rescue SystemCallError, SocketError, IOError => e
      raise ConnectionError.new(@host, @port, "cannot connect (#{e.message})")
    end

    def exchange(socket, payload, chunks)
      deadline = @timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout)
      write_all(socket, payload, deadline)
      send_chunks(socket, chunks) if chunks
      read_head(socket, chunks ? @timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout) : deadline)
    end

    # A streamed request's chunks and its zero end, each within `timeout`. When the server stops
    # reading (it answered early: a limit, a refused stream), its answer is what the caller gets.
    def send_chunks(socket, chunks)
      chunks.pieces.each do |piece|
        write_all(socket, RPC10.chunk(piece), @timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout))
      end
      write_all(socket, RPC10::END_OF_STREAM, @timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout))
    rescue RPC10::StreamError => e
      raise InvalidRequest, e.message
    rescue ConnectionError => e
      raise if e.is_a?(ReadTimeoutError)

      early = begin
        read_frame(socket, Process.clock_gettime(Process::CLOCK_MONOTONIC) + 2)
      rescue Error
        nil
      end
      raise remote_error(early[1]) if early.is_a?(Array) && early[0] == :error && early.size == 2

      raise ConnectionError.new(@host, @port, "the server stopped reading the streamed request (#{e.message})")
    end

    # The infos before the answer, and the answer: an Answer whose chunks, if any, come next.
    def read_head(socket, deadline)
      answer = Answer.new
      MAX_INFOS.times do
        term = read_frame(socket, deadline)
        return answer.head(term) unless term.is_a?(Array) && term.size == 3 && term[0] == :info

        note_info(answer, term)
      end
      raise InvalidReply, "the server sent #{MAX_INFOS} infos and no answer"
    end

    def note_info(answer, info)
      case info[1]
      when :stream then answer.streamed = true
      when :valid then answer.valid = true
      when :cache
        begin
          answer.cache = RPC10.read_cache_options(info[2])
        rescue ArgumentError => e
          raise InvalidReply, "malformed cache info from the server: #{e.message}"
        end
      end
      # other infos modify nothing this client knows: ignored, as the specification says
    end

    def read_frame(socket, deadline)
      header = read_exactly(socket, 4, deadline)
      body = read_exactly(socket, header.unpack1('N'), deadline)
      begin
        Codec.decode(body)
      rescue StandardError => e
        raise InvalidReply, "undecodable answer from #{@host}:#{@port}: #{e.message}"
      end
    end

    def write_all(socket, data, deadline)
      until data.empty?
        case (n = socket.write_nonblock(data, exception: false))
        when :wait_writable then wait(socket, :wait_writable, deadline)
        else data = data.byteslice(n..)
        end
      end
    rescue SystemCallError, IOError => e
      raise ConnectionError.new(@host, @port, "write failed (#{e.message})")
    end

    def read_exactly(socket, length, deadline, closed = 'connection closed before a whole answer')
      buffer = String.new(capacity: [length, 1 << 20].min, encoding: Encoding::BINARY)
      while buffer.bytesize < length
        case (chunk = socket.read_nonblock([length - buffer.bytesize, 1 << 20].min, exception: false))
        when :wait_readable then wait(socket, :wait_readable, deadline)
        when nil then raise ConnectionError.new(@host, @port, closed)
        else buffer << chunk
        end
      end
      buffer
    rescue SystemCallError, IOError => e
      raise ConnectionError.new(@host, @port, "read failed (#{e.message})")
    end

    def wait(socket, how, deadline)
      left = deadline && (deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC))
      raise ReadTimeoutError.new(@host, @port, @timeout) if left && left <= 0
      raise ReadTimeoutError.new(@host, @port, @timeout) unless socket.public_send(how, left)
    end

    def interpret(kind, answer)
      if answer.is_a?(Array) && answer[0] == :reply && answer.size == 2 && kind == :call
        answer[1]
      elsif answer.is_a?(Array) && answer[0] == :noreply && answer.size == 1
        nil
      elsif answer.is_a?(Array) && answer[0] == :error && answer.size == 2
        raise remote_error(answer[1])
      else
        raise InvalidReply, "unexpected answer to a #{kind}: #{answer.inspect}"
      end
    end

    def remote_error(error)
      unless error.is_a?(Array) && error.size == 5 && ERROR_TYPES.key?(error[0])
        return InvalidReply.new("malformed error answer: #{error.inspect}")
      end

      type, code, klass, detail, trace = error.to_a
      ERROR_TYPES[type].new(type, code, text(klass), text(detail), Array(trace).map { |line| text(line) })
    end

    # Error fields arrive as binaries; they are text, so they read as UTF-8 when they are.
    def text(value)
      value = value.to_s.dup
      utf8 = value.dup.force_encoding(Encoding::UTF_8)
      utf8.valid_encoding? ? utf8 : value
    end
  end

  # A BERT-RPC 1.0 answer, what a call with accept: or validation: returns. value: the reply's
  # term (nil for {noreply}); cache: the cache info's options as a Hash ({access: :public,
  # expiration: 60} or with validation: token) or nil; valid?: the client's token still holds;
  # streamed?: chunks follow, read with #each (or #read). The connection is busy until the last
  # chunk was read; #close before that drops the rest by closing the connection.
  class Answer
    include Enumerable

    attr_reader :term
    attr_accessor :value, :cache, :valid, :streamed

    def head(term)
      if @streamed && !(term.is_a?(Array) && term.size == 2 && term[0] == :reply)
        raise InvalidReply, "a streamed answer must start with {reply, Term}, not #{term.inspect}"
      end

      @term = term
      self
    end

    def valid?
      @valid ? true : false
    end

    def streamed?
      @streamed ? true : false
    end

    def attach(service, socket)
      @service = service
      @socket = socket
    end

    def each
      return enum_for(:each) unless block_given?

      while (chunk = next_chunk)
        yield chunk
      end
      self
    end

    # All the remaining chunks at once (iterate instead to keep memory bounded).
    def read
      out = String.new(encoding: Encoding::BINARY)
      each { |c| out << c }
      out
    end

    def close
      socket = @socket
      @socket = nil
      socket&.close
    rescue IOError, SystemCallError
      nil
    end

    def inspect
      "#<BERTD::Answer value=#{@value.inspect[0, 200]} cache=#{@cache.inspect} valid=#{valid?} streamed=#{streamed?}>"
    end

    private

    def next_chunk
      return nil unless @socket

      chunk = begin
        @service.__send__(:read_stream_chunk, @socket)
      rescue StandardError
        close
        raise
      end
      return chunk if chunk

      socket = @socket
      @socket = nil
      @service.__send__(:give_back, socket)
      nil
    end
  end

  # svc.call / svc.cast: the next name is the module.
  class Request < BasicObject
    def initialize(service, kind, options)
      @service = service
      @kind = kind
      @options = options
    end

    def method_missing(mod, *args)
      ::Kernel.raise ::ArgumentError, "#{mod} is a module: svc.#{@kind}.#{mod}.function(args)" unless args.empty?

      Mod.new(@service, @kind, @options, mod)
    end

    def respond_to_missing?(_name, _include_private = false)
      true
    end
  end

  # svc.call.mod: the next name is the function, its arguments the request's.
  class Mod < BasicObject
    def initialize(service, kind, options, mod)
      @service = service
      @kind = kind
      @options = options
      @mod = mod
    end

    def method_missing(fun, *args, &block)
      @service.request(@kind, @mod, fun, args, **@options, &block)
    end

    def respond_to_missing?(_name, _include_private = false)
      true
    end
  end
end
