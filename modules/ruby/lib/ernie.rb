# ernie.rb: Ernie's Ruby handler API for bertd external handlers (BERPs in on fd 3, answers out on fd 4).
# An Ernie handler file must run under it unchanged; it never writes to stdout or stderr on its
# own (those belong to the handler) and never leaves a request without an answer.
require 'logger'
require_relative 'bertd/codec'
require_relative 'bertd/erlang'
require_relative 'bertd/rpc10'

module Ernie
  VERSION = '1.0.0'
  PROCESS_FUNCTION = :'$bertd_message'
  MAX_BACKTRACE = 200

  # A failure that answers `{error, {server, Code, <<"ServerError">>, Message, []}}`.
  class ServerError < StandardError
    attr_reader :code

    def initialize(code, message)
      @code = code
      super(message)
    end
  end

  ErlangError = BERTD::Erlang::Error
  ErlangTimeout = BERTD::Erlang::Timeout
  ErlangNode = BERTD::Erlang::Node
  StreamError = BERTD::RPC10::StreamError
  Stream = BERTD::Stream
  RequestStream = BERTD::RequestStream

  # Returned by a function: the client's validation token still holds ({info, valid, []}, {noreply}).
  VALID = Object.new
  def VALID.inspect
    'Ernie::VALID'
  end
  VALID.freeze

  # What the request being served carries beyond its term: the infos before it (a stream, the
  # client's validation token) and what its function attached (a cache info, VALID).
  Context = Struct.new(:streamed, :stream, :token, :cache, :valid)

  # A frame that was read whole but is not a BERT; it answers a protocol error.
  Undecodable = Struct.new(:reason)

  # One exposed module: functions given as callables, and, for Ernie.expose, a Ruby module
  # whose public instance methods are looked up when called (so later definitions count).
  class Mod
    attr_reader :name, :funs

    def initialize(name)
      @name = name.to_s
      @funs = {}
      @mixins = []
    end

    def fun(name, callable = nil, &block)
      body = callable || block
      raise ArgumentError, "fun(#{name.inspect}) needs a block or a callable" unless body

      @funs[name.to_s] = body
    end

    def mixin(mixin)
      context = Object.new
      context.extend(mixin)
      @mixins << [mixin, context]
    end

    # The callable for `name`, or nil. Only public methods are functions: private helpers of
    # an exposed module stay private.
    def lookup(name)
      name = name.to_s
      return @funs[name] if @funs.key?(name)

      @mixins.reverse_each do |mixin, context|
        return context.method(name) if mixin.public_method_defined?(name)
      end
      nil
    end
  end

  # Lets a handler file write Ernie's old top-level DSL: `mod(:ext) { fun(:add) { |a, b| a + b } }`.
  # Only the top-level object gets these methods, not every Object.
  module DSL
    private

    def mod(name, body = nil, &block)
      Ernie.mod(name, body, &block)
    end

    def fun(name, body = nil, &block)
      Ernie.fun(name, body, &block)
    end

    def logfile(path)
      Ernie.logfile(path)
    end

    def loglevel(level)
      Ernie.loglevel(level)
    end
  end

  @mods = {}
  @current_mod = nil
  @logger = nil
  @loglevel = Logger::INFO
  @auto_start = true
  @started = false
  @float_format = nil
  @context = nil

  class << self
    attr_reader :mods, :logger
    attr_accessor :auto_start

    # The form of the floats in answers: :ernie (FLOAT_EXT, what ruby-bert and so every Ernie-era
    # client reads; the default, see BERTD::Codec.float_format) or :new (NEW_FLOAT, what
    # term_to_binary/1 writes). Requests are read in either form.
    def float_format
      @float_format || BERTD::Codec.float_format
    end

    def float_format=(format)
      @float_format = BERTD::Codec.float_format_of(format)
    end

    # Declares module `name`; the block (or callable) declares its functions with `fun`.
    def mod(name, body = nil, &block)
      body ||= block
      raise ArgumentError, "mod(#{name.inspect}) needs a block or a callable" unless body

      m = (@mods[name.to_s] ||= Mod.new(name))
      previous = @current_mod
      @current_mod = m
      begin
        if receiver_has_fun?(body)
          body.call
        else
          m.instance_exec(&body)
        end
      ensure
        @current_mod = previous
      end
      m
    end

    # Declares a function of the module being declared by the enclosing `mod` block.
    def fun(name, body = nil, &block)
      raise ArgumentError, "fun(#{name.inspect}) outside of a mod block" unless @current_mod

      @current_mod.fun(name, body, &block)
    end

    # Makes the public instance methods of the Ruby module `mixin` the functions of `name`.
    def expose(name, mixin)
      m = (@mods[name.to_s] ||= Mod.new(name))
      m.mixin(mixin)
      m
    end

    # Sends the library's log (start, requests, errors) to `path` (a file name or an IO).
    def logfile(path)
      @logger = Logger.new(path)
      @logger.level = @loglevel
      @logger
    end

    # Logger::DEBUG also logs every answer (which can be large).
    def loglevel(level)
      @loglevel = level
      @logger.level = level if @logger
      level
    end

    def log(text, level = Logger::INFO)
      @logger&.add(level, text)
    end

    # The handler as a process of bertd's Erlang node (bertd/erlang.rb has the details).
    # Calls mod:fun(*args) on `node` (a name, an ErlangNode, nil: bertd's native node); raises
    # ErlangError for {badrpc, Reason}, an unreachable node, and after `timeout` seconds.
    def erlang_rpc(node, mod, fun, args = [], timeout: nil)
      BERTD::Erlang.rpc(node, mod, fun, args, timeout: timeout)
    end

    # erlang_send(dest, msg) (dest a name on bertd's node, t[name, node], a BERTD::Pid or
    # t[node, number, serial]), or erlang_send(node, name, msg).
    def erlang_send(*args)
      BERTD::Erlang.send_message(*args)
    end

    # A held node connection: an ErlangNode whose #rpc and #send_message reuse it.
    def erlang_connect(node)
      BERTD::Erlang.connect(node)
    end

    def self_pid
      BERTD::Erlang.self_pid
    end

    # The next message sent to self_pid; raises ErlangTimeout after `timeout` seconds (nil: never).
    def erlang_recv_message(timeout = nil)
      BERTD::Erlang.recv_message(timeout)
    end

    # {name, BertdNode} ! Msg runs the block with Msg on one of this module's workers.
    def erlang_register_process(name, callable = nil, &block)
      BERTD::Erlang.register_process(name, callable, &block)
    end

    # Calls Mod:Fun(*Args) as a request would, raising ServerError when it does not exist.
    def dispatch(mod, fun, args)
      m = @mods[mod.to_s]
      raise ServerError.new(1, "No such module '#{mod}'") unless m

      body = m.lookup(fun)
      raise ServerError.new(2, "No such function '#{mod}:#{fun}'") unless body

      body.call(*args)
    end

    # BERT-RPC 1.0, inside a function: the streamed request's chunks (a RequestStream, Enumerable),
    # or nil when the request was not streamed.
    def stream_in
      context('stream_in').stream
    end

    # The token of the client's {info, cache, [{validation, Token}]} for this request, or nil.
    def validation_token
      context('validation_token').token
    end

    # Attaches {info, cache, [{access, A}, {expiration, S} | {validation, Token}]} to this answer
    # (expiration in seconds, 0: for ever). Errors are never cached.
    def cache(expiration: nil, validation: nil, access: :private)
      options = BERTD::RPC10.cache_options(access: access, expiration: expiration, validation: validation)
      context('cache').cache = options
    end

    # An answer sent as a stream: `return Ernie.stream(reply: []) { |out| out << data }`, or
    # Ernie.stream(enumerable_or_io). Returning an Enumerator streams too.
    def stream(chunks = nil, reply: [], chunk_size: BERTD::RPC10::CHUNK, &block)
      chunks ||= Enumerator.new(&block) if block
      raise ArgumentError, 'Ernie.stream needs chunks or a block' unless chunks

      BERTD::Stream.new(chunks, reply: reply, chunk_size: chunk_size)
    end

    # Serves requests until fd 3 reaches end-of-file (bertd stopped or reloads this worker).
    def start(input = nil, output = nil)
      @started = true
      input ||= open_fd(3, 'rb')
      output ||= open_fd(4, 'wb')
      output.sync = true
      log("Starting (pid #{Process.pid}, modules: #{@mods.keys.join(', ')})")
      serve(input, output)
    rescue Errno::EPIPE, Errno::ECONNRESET, IOError
      log('Output closed, exiting')
    end

    # The answer to one decoded request, or nil for `info` (no answer; it precedes the call).
    def process(request)
      if request.is_a?(Undecodable)
        return BERT::Tuple[:error, BERT::Tuple[:protocol, 2, 'ProtocolError',
                                               "Unable to read data: #{request.reason}", []]]
      end
      unless request.is_a?(Array) && !request.empty?
        return server_error(0, "Invalid request: #{brief(request)}")
      end

      case request[0]
      when :info
        log("-> #{request.inspect}")
        nil
      when :call, :cast
        return server_error(0, "Invalid request: #{brief(request)}") unless request.size == 4

        run(*request)
      else
        server_error(0, "Invalid request: #{brief(request)}")
      end
    end

    # True when the file being run is the handler and its loop should start at exit.
    def start_at_exit?
      @auto_start && !@started && !@mods.empty? && $!.nil?
    end

    private

    def serve(input, output)
      pending = Context.new
      loop do
        request = read_berp(input)
        break if request.nil?
        next if note_info(request, pending)

        pending.stream = BERTD::RequestStream.new(input) if pending.streamed
        ctx = @context = pending
        pending = Context.new
        answer = begin
          process(request)
        ensure
          @context = nil
        end
        return log('Stream cut short, exiting') unless answer_request(output, ctx, answer)
      end
      log('End of input, exiting')
    end

    def context(what)
      @context or raise "Ernie.#{what} works only inside a function that answers a request"
    end

    # True when `request` is an info (noted in `pending` for the request after it).
    def note_info(request, pending)
      return false unless request.is_a?(Array) && request.size == 3 && request[0] == :info

      log("-> #{brief(request)}")
      case request[1]
      when :stream then pending.streamed = true
      when :cache
        begin
          pending.token = BERTD::RPC10.read_cache_options(request[2])[:validation]
        rescue ArgumentError => e
          log(e.message, Logger::WARN)
        end
      end
      true
    end

    # Writes the answer with its infos. A plain answer waits for the request's stream to end
    # (bertd takes an answer as the end of the request); a streamed one drains it before its end.
    # False when a stream was cut short: the worker must end.
    def answer_request(output, ctx, answer)
      stream = answer.is_a?(BERTD::Stream)
      return false if !stream && ctx.stream && !ctx.stream.drain
      return true if answer.nil?

      head = String.new(encoding: Encoding::BINARY)
      head << BERTD::Codec.frame(BERT::Tuple[:info, :cache, ctx.cache]) if ctx.cache
      head << BERTD::Codec.frame(BERTD::RPC10::VALID_INFO) if ctx.valid
      unless stream
        log("<- #{answer.inspect}", Logger::DEBUG) if @logger&.debug? # inspect costs O(answer size)
        output.write(head << frame_answer(answer))
        return true
      end
      write_stream(output, ctx, head, answer)
    end

    def write_stream(output, ctx, head, answer)
      pieces = answer.pieces
      first = begin
        pieces.next
      rescue StopIteration
        nil
      rescue StandardError => e # failed before its first chunk: still an ordinary error answer
        log("The streamed answer raised #{e.class}: #{e.message}", Logger::ERROR)
        return false if ctx.stream && !ctx.stream.drain

        output.write(frame_answer(user_error(e)))
        return true
      end
      head << BERTD::Codec.frame(BERTD::RPC10::STREAM_INFO) << frame_answer(BERT::Tuple[:reply, answer.reply])
      output.write(head)
      begin
        while first
          output.write(BERTD::RPC10.chunk(first))
          first = begin
            pieces.next
          rescue StopIteration
            nil
          end
        end
      rescue Errno::EPIPE, Errno::ECONNRESET, IOError
        raise
      rescue StandardError => e
        log("The streamed answer raised #{e.class} after it began: #{e.message}; ending the worker", Logger::ERROR)
        return false
      end
      return false if ctx.stream && !ctx.stream.drain

      output.write(BERTD::RPC10::END_OF_STREAM)
      true
    end

    # A function's result as the answer: Enumerators and Streams stream (a cast's stream is run
    # through, its work done, and dropped); VALID answers {noreply} after {info, valid, []}.
    def result_answer(kind, result)
      result = BERTD::Stream.new(result) if result.is_a?(Enumerator)
      if kind == :cast
        result.pieces.each { |_| nil } if result.is_a?(BERTD::Stream)
        return BERT::Tuple[:noreply]
      end
      if result.equal?(VALID)
        @context.valid = true if @context
        return BERT::Tuple[:noreply]
      end
      result.is_a?(BERTD::Stream) ? result : BERT::Tuple[:reply, result]
    end

    def forget_attachments
      return unless @context

      @context.cache = nil
      @context.valid = nil
    end

    def brief(term)
      text = term.inspect
      text.size > 200 ? "#{text[0, 200]}..." : text
    end

    def receiver_has_fun?(body)
      body.binding.receiver.respond_to?(:fun, true)
    rescue ArgumentError, NoMethodError
      false
    end

    def run(kind, mod, fun, args)
      log("-> #{BERT::Tuple[kind, mod, fun, args].inspect}") if @logger # inspect costs O(request size)
      return run_process(kind, args) if fun == PROCESS_FUNCTION
      args = [args] unless args.is_a?(Array)
      result_answer(kind, dispatch(mod, fun, args))
    rescue ServerError => e
      log("Server error: #{e.message}", Logger::ERROR)
      forget_attachments
      kind == :call ? server_error(e.code, e.message) : BERT::Tuple[:noreply]
    rescue SystemExit, SignalException
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- SystemStackError etc. must answer too
      log("#{e.class}: #{e.message}\n  #{(e.backtrace || []).join("\n  ")}", Logger::ERROR)
      forget_attachments
      kind == :call ? user_error(e) : BERT::Tuple[:noreply]
    end

    # bertd runs a message to a name this worker's module registered (erlang_register_process) as
    # {call, Module, '$bertd_message', [Name, Msg]}, answered {reply, ok}; a failure is answered as an
    # error, which bertd counts (errors.<type>.<module> in its stats) and logs.
    def run_process(kind, args)
      body = args.is_a?(Array) && args.size == 2 ? BERTD::Erlang.process_for(args[0]) : nil
      unless body
        log("A message for #{args[0].inspect}, which this worker did not register", Logger::ERROR)
        return server_error(2, "no Erlang process #{args[0].inspect} is registered in worker #{Process.pid}")
      end
      body.call(args[1])
      kind == :call ? BERT::Tuple[:reply, :ok] : BERT::Tuple[:noreply]
    rescue SystemExit, SignalException
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- as run: every failure answers
      log("#{e.class}: #{e.message}\n  #{(e.backtrace || []).join("\n  ")}", Logger::ERROR)
      user_error(e)
    end

    def server_error(code, message)
      BERT::Tuple[:error, BERT::Tuple[:server, code, 'ServerError', message, []]]
    end

    def user_error(exc)
      name = exc.class.name || exc.class.to_s
      BERT::Tuple[:error, BERT::Tuple[:user, 0, name, exc.message.to_s, user_backtrace(exc)]]
    end

    # The handler's frames only: the frames of this loop below them say nothing to the client.
    # A runaway recursion has ten thousand frames; the first ones tell the story.
    def user_backtrace(exc)
      trace = (exc.backtrace || []).map(&:to_s)
      trace.pop while trace.size > 1 && trace.last.start_with?("#{__FILE__}:")
      return trace if trace.size <= MAX_BACKTRACE

      trace.first(MAX_BACKTRACE) << "... #{trace.size - MAX_BACKTRACE} more frames"
    end

    # A result that cannot be encoded is the handler's error, reported like a raised one.
    def frame_answer(answer)
      BERTD::Codec.frame(answer, float_format: float_format)
    rescue StandardError => e
      e.set_backtrace(caller) unless e.backtrace
      BERTD::Codec.frame(user_error(e), float_format: float_format)
    end

    # nil at end of input (also when the input ends inside a frame: bertd has gone).
    def read_berp(input)
      header = input.read(4)
      return nil if header.nil? || header.bytesize < 4

      length = header.unpack1('N')
      body = input.read(length)
      return nil if body.nil? || body.bytesize < length

      decode_frame(body)
    end

    # The frame was read whole, so the stream is still in step: a bad one is answered, not fatal.
    # ruby-bert raises all kinds of StandardError on odd input (e.g. a `{bert, regex, 1, 2}`).
    def decode_frame(body)
      BERTD::Codec.decode(body)
    rescue StandardError => e
      Undecodable.new("#{e.class}: #{e.message}")
    end

    def open_fd(fd, mode)
      IO.new(fd, mode)
    rescue Errno::EBADF, Errno::EINVAL, ArgumentError # Ruby takes free fds 3 and 4 for itself
      abort("ernie: file descriptor #{fd} is not open: this handler is meant to be started by " \
            'bertd (or Ernie), which passes requests on fd 3 and reads answers on fd 4')
    end
  end
end

TOPLEVEL_BINDING.receiver.extend(Ernie::DSL)

at_exit do
  Ernie.start if Ernie.start_at_exit?
end
