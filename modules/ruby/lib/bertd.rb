# bertd.rb: the bertd name for the Ruby handler library: `Bertd` is the same module as `Ernie`
# (`Bertd.expose(:ext, Ext)`). It adds nothing and never changes Ernie's behaviour.
require_relative 'ernie'

Bertd = Ernie unless defined?(Bertd)
