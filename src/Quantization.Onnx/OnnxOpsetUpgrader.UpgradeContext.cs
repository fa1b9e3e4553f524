using System.Buffers.Binary;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public static partial class OnnxOpsetUpgrader
{
    /// <summary>Where an adapter works: the graph (a subgraph has its parent), the versions, and the model's names.</summary>
    private sealed record UpgradeContext(GraphProto Graph, UpgradeContext? Parent, long ModelOpset, long TargetOpset, Names Names)
    {
        /// <summary>Adds a 1-D int64 initializer to the current graph and returns its (new, unique) name.</summary>
        public string AddInt64s(NodeProto node, string role, long[] values)
        {
            byte[] bytes = new byte[values.Length * sizeof(long)];
            for (int i = 0; i < values.Length; i++)
            {
                BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(i * sizeof(long)), values[i]);
            }

            return AddInitializer(node, role, TensorProto.Types.DataType.Int64, [values.Length], bytes);
        }

        /// <summary>Adds a 1-D float initializer to the current graph and returns its name.</summary>
        public string AddFloats(NodeProto node, string role, float[] values)
        {
            byte[] bytes = new byte[values.Length * sizeof(float)];
            for (int i = 0; i < values.Length; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), values[i]);
            }

            return AddInitializer(node, role, TensorProto.Types.DataType.Float, [values.Length], bytes);
        }

        /// <summary>Adds a scalar initializer of <paramref name="like"/>'s element type (float, double or float16), as the old float attribute was.</summary>
        public string AddScalar(NodeProto node, string role, string like, float value)
        {
            TensorProto.Types.DataType type = ElementTypeOf(like) ?? throw Unsupported(node, this,
                $"needs its {role} as a tensor of the element type of '{like}', which the graph does not declare (add value_info for it)");
            byte[] bytes;
            switch (type)
            {
                case TensorProto.Types.DataType.Float:
                    bytes = new byte[sizeof(float)];
                    BinaryPrimitives.WriteSingleLittleEndian(bytes, value);
                    break;
                case TensorProto.Types.DataType.Double:
                    bytes = new byte[sizeof(double)];
                    BinaryPrimitives.WriteDoubleLittleEndian(bytes, value);
                    break;
                case TensorProto.Types.DataType.Float16:
                    bytes = new byte[2];
                    BinaryPrimitives.WriteHalfLittleEndian(bytes, (Half)value);
                    break;
                default:
                    throw Unsupported(node, this, $"works on '{like}' of element type {type}, for which the old float {role} attribute has no defined conversion");
            }

            return AddInitializer(node, role, type, [], bytes);
        }

        private string AddInitializer(NodeProto node, string role, TensorProto.Types.DataType type, long[] dims, byte[] bytes)
        {
            string name = Names.Fresh(Stem(node) + "_" + role);
            Graph.Initializer.Add(new TensorProto { Name = name, DataType = (int)type, Dims = { dims }, RawData = ByteString.CopyFrom(bytes) });
            return name;
        }

        /// <summary>The rank a value is declared with (graph input, output, value_info or initializer), here or in an enclosing graph.</summary>
        public int? RankOf(string name)
        {
            for (UpgradeContext? scope = this; scope is not null; scope = scope.Parent)
            {
                ValueInfoProto? info = Declared(scope.Graph, name);
                if (info?.Type?.TensorType?.Shape is TensorShapeProto shape)
                {
                    return shape.Dim.Count;
                }

                if (scope.Graph.Initializer.FirstOrDefault(t => t.Name == name) is TensorProto tensor)
                {
                    return tensor.Dims.Count;
                }
            }

            return null;
        }

        /// <summary>
        /// The element type of a value: declared, an initializer's, a Constant's or Cast's, or that of the first input of
        /// an operator that keeps it; <see langword="null"/> when none of these tells.
        /// </summary>
        public TensorProto.Types.DataType? ElementTypeOf(string name)
        {
            for (int hops = 0; hops < 1000; hops++)
            {
                NodeProto? producer = null;
                for (UpgradeContext? scope = this; scope is not null && producer is null; scope = scope.Parent)
                {
                    if (Declared(scope.Graph, name)?.Type?.TensorType is { ElemType: > 0 } tensorType)
                    {
                        return (TensorProto.Types.DataType)tensorType.ElemType;
                    }

                    if (scope.Graph.Initializer.FirstOrDefault(t => t.Name == name) is TensorProto initializer)
                    {
                        return (TensorProto.Types.DataType)initializer.DataType;
                    }

                    producer = scope.Graph.Node.FirstOrDefault(n => n.Output.Contains(name));
                }

                if (producer is null || producer.Domain is not ("" or "ai.onnx"))
                {
                    return null;
                }

                switch (producer.OpType)
                {
                    case "Cast":
                        return producer.FindAttribute("to") is AttributeProto to ? (TensorProto.Types.DataType)to.I : null;
                    case "Constant":
                        return producer.FindAttribute("value")?.T is TensorProto value ? (TensorProto.Types.DataType)value.DataType : null;
                    case string op when TypePreserving.Contains(op) && producer.Input.Count > 0:
                        name = producer.Input[0];
                        break;
                    default:
                        return null;
                }
            }

            return null;
        }

        private static ValueInfoProto? Declared(GraphProto graph, string name) =>
            graph.Input.FirstOrDefault(v => v.Name == name) ?? graph.ValueInfo.FirstOrDefault(v => v.Name == name) ?? graph.Output.FirstOrDefault(v => v.Name == name);
    }
}
