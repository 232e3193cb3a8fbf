# bertrpc.rb: the bertrpc gem's names (BERTRPC::Service, BERTRPC::UserError, ...) on bertd's client,
# so Ernie users' client code runs unchanged. Only names live here; behaviour is in bertd/client.rb.
require_relative 'bertd/client'

module BERTRPC
  BERTRPCError = BERTD::Error
  RemoteError = BERTD::RemoteError
  ConnectionError = BERTD::ConnectionError
  # bertd's client has one error for a connection that broke while reading; ReadTimeoutError is
  # a kind of it (in the gem the two were siblings).
  ReadError = BERTD::ConnectionError
  ReadTimeoutError = BERTD::ReadTimeoutError
  ProtocolError = BERTD::ProtocolError
  ServerError = BERTD::ServerError
  UserError = BERTD::UserError
  ProxyError = BERTD::ProxyError
  InvalidOption = BERTD::InvalidOption
  InvalidRequest = BERTD::InvalidRequest

  # BERTRPC::Service.new(host, port, timeout = nil); call and cast also take the options as a Hash.
  class Service < BERTD::Service
    def initialize(host, port, timeout = nil)
      super(host, port, timeout: timeout)
    end

    def call(options = nil, **keywords)
      super(**(options || {}), **keywords)
    end

    def cast(options = nil, **keywords)
      super(**(options || {}), **keywords)
    end
  end
end
