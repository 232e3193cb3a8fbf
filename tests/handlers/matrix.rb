# matrix.rb: the cross-language matrix's handler written with the Ruby library (Ernie's API), module
# matrix_rb: echo(X), value(Name), check(Name, X) and fail(Message), as in matrix.py.
# Usage: ruby -I modules/ruby/lib matrix.rb TABLE. It never alters a value.
require 'ernie'
require_relative '../clients/matrix_values'

MATRIX_VALUES, MATRIX_ERRORS = MatrixValues.load(ARGV[0])

class MatrixError < StandardError; end

module MatrixRb
  def echo(x)
    x
  end

  def value(name)
    raise MatrixError, "no value #{name}: #{MATRIX_ERRORS.fetch(name, 'not in the table')}" unless MATRIX_VALUES.key?(name)

    MATRIX_VALUES[name]
  end

  def check(name, x)
    return t[:undecodable, MATRIX_ERRORS.fetch(name, 'not in the table')] unless MATRIX_VALUES.key?(name)

    MatrixValues.same?(x, MATRIX_VALUES[name]) ? :ok : t[:mismatch, MatrixValues.short(x)]
  end

  def fail(message)
    raise MatrixError, message.dup.force_encoding(Encoding::UTF_8)
  end
end

Ernie.expose(:matrix_rb, MatrixRb)
