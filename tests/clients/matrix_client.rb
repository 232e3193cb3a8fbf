# matrix_client.rb: the cross-language matrix's Ruby client: runs every check of a plan against one bertd
# over one persistent BERTD::Service and prints `ok N` or `fail N why` per check, then `done`.
# Usage: ruby -I modules/ruby/lib matrix_client.rb HOST PORT TABLE PLAN. It never retries a failed check.
require 'bertd/client'
require_relative 'matrix_values'

MESSAGE = "matrix failure: \u2603 \u00fc".b

def expect_error(klass, code, detail, remote_class = nil)
  result = yield
  "no error, got #{MatrixValues.short(result)}"
rescue klass => e
  if e.code != code || (detail && e.message.b != detail.b) || (remote_class && e.remote_class != remote_class)
    "got #{e.type} #{e.code} #{e.remote_class.inspect} #{e.message.inspect}"
  end
rescue BERTD::Error => e
  "got #{e.class}: #{e.message}"
end

def same_or_changed(got, value)
  MatrixValues.same?(got, value) ? nil : "changed: #{MatrixValues.short(got)}"
end

def run_check(svc, check, mod, name, values, errors)
  return "ruby-bert cannot decode the value: #{errors[name]}" if !name.empty? && !values.key?(name)

  value = values[name]
  case check
  when :echo then same_or_changed(svc.request(:call, mod, :echo, [value]), value)
  when :send
    got = svc.request(:call, mod, :check, [name, value])
    got == :ok ? nil : "handler saw: #{MatrixValues.short(got)}"
  when :fetch then same_or_changed(svc.request(:call, mod, :value, [name]), value)
  when :priority then same_or_changed(svc.request(:call, mod, :echo, [value], priority: :low), value)
  when :cast
    got = svc.request(:cast, mod, :echo, [value])
    got.nil? ? nil : "cast answered #{MatrixValues.short(got)}"
  when :user_error
    expect_error(BERTD::UserError, 0, MESSAGE, 'MatrixError') { svc.request(:call, mod, :fail, [MESSAGE]) }
  when :no_function
    expect_error(BERTD::ServerError, 2, "No such function '#{mod}:no_such_function'") do
      svc.request(:call, mod, :no_such_function, [1])
    end
  when :no_module
    expect_error(BERTD::ServerError, 1, "No such module 'matrix_none'") { svc.request(:call, :matrix_none, :f, []) }
  when :protocol
    expect_error(BERTD::ProtocolError, 2, nil) { svc.request_raw("\x83\xff\x00".b) }
  else "unknown check #{check}"
  end
end

host, port, table, plan_path = ARGV
values, errors = MatrixValues.load(table)
plan = BERTD::Codec.decode(File.binread(plan_path))
svc = BERTD::Service.new(host, Integer(port), timeout: 60, persistent: true)
out = plan.each_with_index.map do |(check, mod, name), i|
  why = begin
    run_check(svc, check, mod, name, values, errors)
  rescue StandardError => e
    "#{e.class}: #{e.message}"
  end
  why.nil? ? "ok #{i}" : "fail #{i} #{why.inspect}"
end
svc.close
$stdout.write("#{out.join("\n")}\ndone\n")
