using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public static partial class OnnxOpsetUpgrader
{
    /// <summary>Every name used anywhere in the model, for new names that collide with none, and which values are read.</summary>
    private sealed class Names
    {
        private readonly HashSet<string> _used = new(StringComparer.Ordinal);
        private readonly HashSet<string> _read = new(StringComparer.Ordinal);

        public Names(GraphProto graph) => Collect(graph);

        /// <summary>Whether a node input or a graph output, anywhere in the model, names the value.</summary>
        public bool IsRead(string name) => _read.Contains(name);

        /// <summary>Returns <paramref name="wanted"/>, or it with the smallest numeric suffix that is still free, and reserves it.</summary>
        public string Fresh(string wanted)
        {
            string name = wanted;
            for (int i = 1; !_used.Add(name); i++)
            {
                name = FormattableString.Invariant($"{wanted}_{i}");
            }

            return name;
        }

        private void Collect(GraphProto graph)
        {
            _used.Add(graph.Name);
            foreach (ValueInfoProto value in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo))
            {
                _used.Add(value.Name);
            }

            _read.UnionWith(graph.Output.Select(o => o.Name));
            _used.UnionWith(graph.Initializer.Select(t => t.Name));
            foreach (NodeProto node in graph.Node)
            {
                _used.Add(node.Name);
                _used.UnionWith(node.Input);
                _used.UnionWith(node.Output);
                _read.UnionWith(node.Input);
                foreach (AttributeProto attribute in node.Attribute)
                {
                    if (attribute.G is not null)
                    {
                        Collect(attribute.G);
                    }

                    foreach (GraphProto subgraph in attribute.Graphs)
                    {
                        Collect(subgraph);
                    }
                }
            }
        }
    }
}
