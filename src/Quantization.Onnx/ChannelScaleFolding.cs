using System.Runtime.InteropServices;

using Quantization.Onnx.Protos;

using Constant = Quantization.Onnx.ChannelScaleGroup.Constant;

namespace Quantization.Onnx;

/// <summary>
/// Per-channel scaling of a shared input, the piece SmoothQuant and AWQ share: for MatMul/Gemm layers with constant
/// weights that read one input X, and a vector s over X's last axis, X's producer takes 1/s and every layer's weight
/// takes s on its input rows (MatMul B [K, N]: row j × s_j; Gemm with transB, B [N, K]: column j × s_j), so that
/// (X / s)·(diag(s)·W) = X·W: the float model computes the same, up to rounding.
/// </summary>
/// <remarks>
/// <para>
/// Producers that take 1/s exactly are those that scale each channel of their output's last axis by a constant (see
/// <see cref="OnnxScaleProducerKind"/>): their per-channel constants (shape [C] or [1, …, 1, C]) are divided by s.
/// Nothing that mixes channels or is nonlinear (Gelu, Softmax, Reshape, Transpose, attention) takes it: the group is
/// then skipped with the reason. The nodes between a producer's changed constant and X (the Mul before a β Add, the
/// MatMul before a bias Add) must have no other reader, or those readers would see the change: the group is then
/// skipped too, unless explicit scales are asked for: then every group whose producer cannot take 1/s (including a
/// graph input) gets a new Mul of X by the constant 1/s that feeds only the group's layers
/// (<see cref="OnnxScaleProducerKind.ExplicitScale"/>), and the layers' weights take s as above.
/// </para>
/// <para>
/// Changed constants are copies per node input (a constant shared with other nodes is never changed for them), and
/// every group's factors apply to the values that earlier groups left, so a layer that is both a consumer of one group
/// and the producer of another takes both. The edits go to the editor's copy of the graph; <see cref="Commit"/> applies them.
/// </para>
/// </remarks>
internal sealed class ChannelScaleFolding(OnnxGraphEditor editor)
{
    private readonly Dictionary<(NodeProto Node, int Input), (float[] Values, long[] Dims)> _edits = new(new NodeInputComparer());

    /// <summary>
    /// Finds every group: each computed value (not a constant) that MatMul/Gemm nodes with a constant 2-D weight read as their first input,
    /// with all the MatMul/Gemm nodes that read it; those that cannot be scaled come back as skipped, with the reason.
    /// </summary>
    /// <param name="editor">The editor whose graph is searched (and later changed).</param>
    /// <param name="selects">Whether a consumer may be scaled (the name patterns); a group with one that may not is skipped.</param>
    /// <param name="others">What to do when X has readers outside the group.</param>
    /// <param name="explicitScales">Whether a group whose producer cannot take 1/s gets an explicit Mul by 1/s instead of being skipped.</param>
    /// <returns>The groups in graph order of their first consumer, and the skipped ones.</returns>
    public static (List<ChannelScaleGroup> Groups, List<OnnxSkippedScaleGroup> Skipped) Find(OnnxGraphEditor editor, Func<NodeProto, bool> selects, OnnxOtherConsumerPolicy others, bool explicitScales = false)
    {
        Finder finder = new(editor);
        List<ChannelScaleGroup> groups = [];
        List<OnnxSkippedScaleGroup> skipped = [];
        IEnumerable<string> inputs = editor.Graph.Node
            .Where(n => IsLinear(n) && n.Input.Count >= 2 && editor.ConstantShape(n.Input[1]) is { Count: 2 } && !editor.IsFloatConstant(n.Input[0]) && n.Input[0].Length > 0)
            .Select(n => n.Input[0])
            .Distinct(StringComparer.Ordinal);
        foreach (string input in inputs)
        {
            (ChannelScaleGroup? group, OnnxSkippedScaleGroup? skip) = finder.Group(input, selects, others, explicitScales);
            if (group is not null)
            {
                groups.Add(group);
            }
            else
            {
                skipped.Add(skip!);
            }
        }

        return (groups, skipped);
    }

    /// <summary>Gets the current values of a constant input (as earlier folds left them, or as the graph holds them); the caller must not change them.</summary>
    public float[] Values(NodeProto node, int input) =>
        _edits.TryGetValue((node, input), out (float[] Values, long[] Dims) edit) ? edit.Values : editor.ReadConstant(node.Input[input]);

    /// <summary>Gets the current values of a constant input for the caller to change in place (AWQ's clipping after <see cref="Fold"/>); <see cref="Commit"/> writes them as a copy for this node input only.</summary>
    /// <exception cref="InvalidDataException">The constant's stored data does not match its shape.</exception>
    public float[] Writable(NodeProto node, int input) => Edit(node, input).Values;

    /// <summary>
    /// Queues the scaling of one group: its producer's constants divided by s (or, with an explicit scale, a new Mul of
    /// X by 1/s that the consumers read instead of X), its consumers' weight rows multiplied by s, and, where X has
    /// other readers, the Mul by s that restores X for them.
    /// </summary>
    /// <param name="group">The group, from <see cref="Find"/> on the same editor.</param>
    /// <param name="scales">s: one positive, finite factor per channel.</param>
    /// <returns>The name of the node inserted: the explicit Mul by 1/s, or the Mul that restores X for its other readers; <see langword="null"/> when there is none.</returns>
    /// <exception cref="ArgumentException">The scales are not one positive, finite value per channel.</exception>
    public string? Fold(ChannelScaleGroup group, ReadOnlySpan<float> scales)
    {
        if (scales.Length != group.Channels)
        {
            throw new ArgumentException(FormattableString.Invariant($"Input '{group.Input}' has {group.Channels} channels; {scales.Length} scales were given."), nameof(scales));
        }

        for (int j = 0; j < scales.Length; j++)
        {
            if (!float.IsFinite(scales[j]) || scales[j] <= 0)
            {
                throw new ArgumentException(FormattableString.Invariant($"Input '{group.Input}': scale {j} is {scales[j]}; scales must be positive and finite."), nameof(scales));
            }
        }

        foreach (Constant constant in group.ProducerConstants)
        {
            Scale(constant, scales, divide: true);
        }

        foreach (NodeProto consumer in group.Consumers)
        {
            Scale(ChannelScaleGroup.WeightOf(consumer), scales, divide: false);
        }

        return group.Kind == OnnxScaleProducerKind.ExplicitScale ? Explicit(group, scales)
            : group.NeedsRestore ? Restore(group, scales)
            : null;
    }

    /// <summary>Writes every changed constant as a new initializer, points its node input at it, and commits the editor.</summary>
    public void Commit()
    {
        foreach (((NodeProto node, int input), (float[] values, long[] dims)) in _edits)
        {
            editor.Rewire(node, input, editor.AddInitializer(node.Input[input] + "_scaled", TensorProto.Types.DataType.Float, dims, MemoryMarshal.AsBytes<float>(values)));
        }

        _edits.Clear();
        editor.Commit();
    }

    private static bool IsLinear(NodeProto node) => node.OpType is "MatMul" or "Gemm" && node.IsDefaultDomain();

    private (float[] Values, long[] Dims) Edit(NodeProto node, int input)
    {
        if (!_edits.TryGetValue((node, input), out (float[] Values, long[] Dims) edit))
        {
            string name = node.Input[input];
            long[] dims = [.. editor.ConstantShape(name) ?? throw new InvalidOperationException($"Input {input} of node '{node.Name}' is not a float constant.")];
            edit = (editor.ReadConstant(name), dims);
            long count = dims.Aggregate(1L, (a, b) => a * b);
            if (edit.Values.Length != count)
            {
                throw new InvalidDataException(FormattableString.Invariant($"Constant '{name}' has shape [{string.Join(", ", dims)}] but {edit.Values.Length} values."));
            }

            _edits[(node, input)] = edit;
        }

        return edit;
    }

    private void Scale(Constant constant, ReadOnlySpan<float> scales, bool divide)
    {
        float[] values = Edit(constant.Node, constant.Input).Values;
        int channels = scales.Length, inner = values.Length / channels;
        for (int i = 0; i < values.Length; i++)
        {
            double s = scales[constant.ChannelsLast ? i % channels : i / inner];
            values[i] = (float)(divide ? values[i] / s : values[i] * s);
        }
    }

    /// <summary>The producer writes X / s under a new name that the consumers read; a Mul by s writes X under its own name for the other readers.</summary>
    private string Restore(ChannelScaleGroup group, ReadOnlySpan<float> scales)
    {
        string scaled = RedirectConsumers(group, "_scaled");
        NodeProto producer = group.Producer!;
        for (int o = 0; o < producer.Output.Count; o++)
        {
            if (producer.Output[o] == group.Input)
            {
                producer.Output[o] = scaled;
            }
        }

        string factor = editor.AddInitializer(group.Input + "_restore_scale", TensorProto.Types.DataType.Float, [scales.Length], MemoryMarshal.AsBytes(scales));
        NodeProto restore = new() { Name = editor.UniqueName(group.Input + "_restore"), OpType = "Mul", Input = { scaled, factor }, Output = { group.Input } };
        editor.InsertAfter(producer, restore);
        return restore.Name;
    }

    /// <summary>A new Mul writes X · (1/s) under a new name, right before the group's first layer in graph order; the layers read it instead of X.</summary>
    private string Explicit(ChannelScaleGroup group, ReadOnlySpan<float> scales)
    {
        NodeProto first = group.Consumers.MinBy(editor.Graph.Node.IndexOf)!;
        string scaled = RedirectConsumers(group, "_smoothed");
        float[] inverse = new float[scales.Length];
        for (int j = 0; j < inverse.Length; j++)
        {
            inverse[j] = (float)(1.0 / scales[j]);
        }

        string factor = editor.AddInitializer(group.Input + "_smooth_scale", TensorProto.Types.DataType.Float, [inverse.Length], MemoryMarshal.AsBytes<float>(inverse));
        NodeProto smooth = new() { Name = editor.UniqueName(group.Input + "_smooth"), OpType = "Mul", Input = { group.Input, factor }, Output = { scaled } };
        editor.InsertBefore(first, smooth);
        return smooth.Name;
    }

    /// <summary>Makes a new value name from X's and points every input of the group's layers that reads X at it.</summary>
    private string RedirectConsumers(ChannelScaleGroup group, string suffix)
    {
        string scaled = editor.UniqueName(group.Input + suffix);
        foreach (NodeProto consumer in group.Consumers)
        {
            for (int i = 0; i < consumer.Input.Count; i++)
            {
                if (consumer.Input[i] == group.Input)
                {
                    consumer.Input[i] = scaled;
                }
            }
        }

        return scaled;
    }

    /// <summary>Compares node inputs by node identity (protobuf messages compare by value).</summary>
    private sealed class NodeInputComparer : IEqualityComparer<(NodeProto Node, int Input)>
    {
        public bool Equals((NodeProto Node, int Input) x, (NodeProto Node, int Input) y) => ReferenceEquals(x.Node, y.Node) && x.Input == y.Input;

        public int GetHashCode((NodeProto Node, int Input) obj) => HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(obj.Node), obj.Input);
    }

    /// <summary>The graph's producers and readers, and the recognition of groups and producers.</summary>
    private sealed class Finder
    {
        private readonly OnnxGraphEditor _editor;
        private readonly Dictionary<string, NodeProto> _producers = new(StringComparer.Ordinal);
        private readonly Dictionary<string, List<NodeProto>> _readers = new(StringComparer.Ordinal);
        private readonly HashSet<NodeProto> _topLevel = new(ReferenceEqualityComparer.Instance);
        private readonly HashSet<string> _outputs;

        public Finder(OnnxGraphEditor editor)
        {
            _editor = editor;
            GraphProto graph = editor.Graph;
            _topLevel.UnionWith(graph.Node);
            foreach (NodeProto node in graph.Node)
            {
                foreach (string output in node.Output.Where(o => o.Length > 0))
                {
                    _producers[output] = node;
                }
            }

            foreach (NodeProto node in graph.AllNodes())
            {
                foreach (string input in node.Input.Where(i => i.Length > 0).Distinct(StringComparer.Ordinal))
                {
                    (_readers.TryGetValue(input, out List<NodeProto>? list) ? list : _readers[input] = []).Add(node);
                }
            }

            _outputs = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        }

        public (ChannelScaleGroup? Group, OnnxSkippedScaleGroup? Skipped) Group(string input, Func<NodeProto, bool> selects, OnnxOtherConsumerPolicy policy, bool explicitScales)
        {
            List<NodeProto> readers = _readers[input];
            NodeProto[] consumers = [.. readers.Where(n => IsLinear(n) && _topLevel.Contains(n))];
            NodeProto[] others = [.. readers.Where(n => !consumers.Contains(n, ReferenceEqualityComparer.Instance))];
            _producers.TryGetValue(input, out NodeProto? producer);
            string? reason = null;
            int channels = 0;
            foreach (NodeProto consumer in consumers)
            {
                (int c, string? problem) = ConsumerChannels(consumer, input);
                reason ??= problem ?? (channels != 0 && c != channels
                    ? FormattableString.Invariant($"the consumers' weights disagree on the input channels ({channels} and {c} at '{consumer.Name}')")
                    : null);
                channels = c;
            }

            if (reason is null && consumers.FirstOrDefault(n => !selects(n)) is NodeProto excluded)
            {
                reason = $"consumer '{excluded.Name}' is left out by the name patterns";
            }

            bool isOutput = _outputs.Contains(input);
            if (reason is null && policy == OnnxOtherConsumerPolicy.Skip && (others.Length > 0 || isOutput))
            {
                string readersText = string.Join(", ", others.Select(n => $"'{n.Name}' ({n.OpType})").Concat(isOutput ? ["the graph output"] : []));
                reason = $"it is also read by {readersText}, which would see the change (the policy for other consumers is Skip)";
            }

            Producer? found = null;
            if (reason is null)
            {
                (found, reason) = Resolve(input, producer, channels);
                if (reason is not null && explicitScales)
                {
                    (found, reason) = (new Producer(OnnxScaleProducerKind.ExplicitScale, [], []), null);
                }
            }

            if (reason is not null)
            {
                return (null, new OnnxSkippedScaleGroup(input, producer?.Name, [.. consumers.Select(n => n.Name)], reason));
            }

            return (new ChannelScaleGroup(input, channels, found!.Kind, producer, found.Nodes, found.Constants, consumers, others, isOutput), null);
        }

        /// <summary>The input channels of a consumer's weight, or why the consumer cannot take s.</summary>
        private (int Channels, string? Problem) ConsumerChannels(NodeProto consumer, string input)
        {
            if (consumer.Input.Count < 2 || consumer.Input[0] != input || consumer.Input[1] == input)
            {
                return (0, $"'{consumer.Name}' ({consumer.OpType}) reads it as another operand than its first (the activation)");
            }

            if (_editor.ConstantShape(consumer.Input[1]) is not { Count: 2 } dims)
            {
                return (0, $"'{consumer.Name}' ({consumer.OpType}) has no constant 2-D weight");
            }

            if (consumer.OpType == "Gemm" && consumer.FindAttribute("transA")?.I is not (null or 0))
            {
                return (0, $"'{consumer.Name}' (Gemm) transposes its input (transA)");
            }

            long channels = dims[consumer.GemmTransB() ? 1 : 0];
            return dims.All(d => d is > 0 and <= int.MaxValue) ? ((int)channels, null) : (0, $"'{consumer.Name}' has an empty weight, of shape [{string.Join(", ", dims)}]");
        }

        /// <summary>The producer's kind, nodes and constants, or why it cannot take 1/s.</summary>
        private (Producer? Producer, string? Reason) Resolve(string input, NodeProto? node, int channels)
        {
            if (node is null)
            {
                return (null, "it is a graph input: there is no producer to take 1/s");
            }

            if (!node.IsDefaultDomain())
            {
                return (null, $"its producer '{node.Name}' is {node.Domain}.{node.OpType}, which is not known to scale each channel by a constant");
            }

            switch (node.OpType)
            {
                case "LayerNormalization" or "SimplifiedLayerNormalization" or "RMSNormalization":
                    return Normalization(input, node, channels);
                case "Add":
                    return AffineOrBias(input, node, channels);
                case "Mul":
                    return Affine(node, add: null, channels);
                case "MatMul" or "Gemm":
                    return Linear(node, add: null, channels);
                default:
                    return (null, $"its producer '{node.Name}' is a {node.OpType}, which does not scale each channel of the last axis by a constant (nonlinear, or it moves channels), so 1/s cannot be folded into it exactly");
            }
        }

        private (Producer?, string?) Normalization(string input, NodeProto node, int channels)
        {
            if (node.Output[0] != input)
            {
                return (null, $"it is not the first output of '{node.Name}' ({node.OpType})");
            }

            bool layerNorm = node.OpType == "LayerNormalization";
            List<Constant> constants = [];
            if (node.Input.Count < 2 || !IsChannelVector(node.Input[1], channels))
            {
                return (null, FormattableString.Invariant($"the scale of '{node.Name}' ({node.OpType}) is not a float constant of {channels} channels"));
            }

            constants.Add(new Constant(node, 1, ChannelsLast: true));
            if (layerNorm && node.Input.Count > 2 && node.Input[2].Length > 0)
            {
                if (!IsChannelVector(node.Input[2], channels))
                {
                    return (null, FormattableString.Invariant($"the bias of '{node.Name}' (LayerNormalization) is not a float constant of {channels} channels"));
                }

                constants.Add(new Constant(node, 2, ChannelsLast: true));
            }

            return (new Producer(layerNorm ? OnnxScaleProducerKind.LayerNormalization : OnnxScaleProducerKind.RmsNormalization, [node], constants), null);
        }

        /// <summary>X = Add(v, b) with a per-channel constant b: v from a Mul by γ after a normalization, or from a MatMul/Gemm.</summary>
        private (Producer?, string?) AffineOrBias(string input, NodeProto add, int channels)
        {
            if (add.Input.Count != 2 || ConstantOperand(add, channels) is not int constant)
            {
                return (null, FormattableString.Invariant($"its producer '{add.Name}' (Add) does not add a float constant of {channels} channels to one other value"));
            }

            string value = add.Input[1 - constant];
            if (!_producers.TryGetValue(value, out NodeProto? before) || !before.IsDefaultDomain() || before.OpType is not ("Mul" or "MatMul" or "Gemm"))
            {
                return (null, $"its producer '{add.Name}' (Add) adds a constant to a value that is not a Mul by a constant after a normalization nor a MatMul/Gemm");
            }

            if (_readers[value].Count != 1 || _outputs.Contains(value))
            {
                return (null, $"'{value}', between '{before.Name}' and '{add.Name}', is read elsewhere too and would see the change");
            }

            Constant bias = new(add, constant, ChannelsLast: true);
            return before.OpType == "Mul" ? Affine(before, bias, channels) : Linear(before, bias, channels);
        }

        /// <summary>Mul(u, γ) with a per-channel constant γ and u a recognised normalization; optionally followed by the β Add.</summary>
        private (Producer?, string?) Affine(NodeProto mul, Constant? add, int channels)
        {
            if (mul.Input.Count == 2 && !_editor.IsFloatConstant(mul.Input[0]) && !_editor.IsFloatConstant(mul.Input[1]))
            {
                return (null, $"'{mul.Name}' (Mul) multiplies two values that are not constants (a gating or Gelu step, or a γ fed at run time), not one value by a per-channel constant");
            }

            if (mul.Input.Count != 2 || ConstantOperand(mul, channels) is not int gamma)
            {
                return (null, FormattableString.Invariant($"'{mul.Name}' (Mul) does not multiply one value by a float constant of {channels} channels"));
            }

            OnnxScaleProducerKind? kind = NormalizationKind(mul.Input[1 - gamma]);
            if (kind is null)
            {
                return (null, $"'{mul.Name}' (Mul) scales a value that is not a recognised layer or RMS normalization");
            }

            List<NodeProto> nodes = [mul];
            List<Constant> constants = [new Constant(mul, gamma, ChannelsLast: true)];
            if (add is Constant bias)
            {
                nodes.Add(bias.Node);
                constants.Add(bias);
            }

            return (new Producer(kind.Value, nodes, constants), null);
        }

        /// <summary>A MatMul/Gemm with a constant 2-D weight of <paramref name="channels"/> output columns (and a per-channel constant Gemm bias), optionally followed by the bias Add.</summary>
        private (Producer?, string?) Linear(NodeProto linear, Constant? add, int channels)
        {
            if (linear.Input.Count < 2 || _editor.ConstantShape(linear.Input[1]) is not { Count: 2 } dims)
            {
                return (null, $"'{linear.Name}' ({linear.OpType}) before it has no constant 2-D weight");
            }

            bool transposed = linear.GemmTransB();
            if (dims[transposed ? 0 : 1] != channels)
            {
                return (null, FormattableString.Invariant($"the weight of '{linear.Name}' ({linear.OpType}) has shape [{string.Join(", ", dims)}], not {channels} output channels"));
            }

            List<Constant> constants = [new Constant(linear, 1, ChannelsLast: !transposed)];
            if (linear.OpType == "Gemm" && linear.Input.Count > 2 && linear.Input[2].Length > 0)
            {
                if (!IsChannelVector(linear.Input[2], channels))
                {
                    return (null, FormattableString.Invariant($"the bias C of '{linear.Name}' (Gemm) is not a float constant of {channels} channels"));
                }

                constants.Add(new Constant(linear, 2, ChannelsLast: true));
            }

            List<NodeProto> nodes = [linear];
            if (add is Constant bias)
            {
                nodes.Add(bias.Node);
                constants.Add(bias);
            }

            return (new Producer(OnnxScaleProducerKind.Linear, nodes, constants), null);
        }

        /// <summary>The index of a two-input node's per-channel constant operand, when exactly one of its operands is one and the other is not a constant.</summary>
        private int? ConstantOperand(NodeProto node, int channels)
        {
            bool first = IsChannelVector(node.Input[0], channels), second = IsChannelVector(node.Input[1], channels);
            return first == second ? null
                : first ? (_editor.IsFloatConstant(node.Input[1]) ? null : 0)
                : (_editor.IsFloatConstant(node.Input[0]) ? null : 1);
        }

        /// <summary>Whether a value is a float constant of shape [C] or [1, …, 1, C].</summary>
        private bool IsChannelVector(string name, int channels) =>
            _editor.ConstantShape(name) is { Count: > 0 } dims && dims[^1] == channels && dims.Take(dims.Count - 1).All(d => d == 1);

        /// <summary>Recognises u = (x − mean(x)) / sqrt(mean((x − mean(x))²) + ε) and u = x / sqrt(mean(x²) + ε) (or x · 1/sqrt(…)) by their operators.</summary>
        private OnnxScaleProducerKind? NormalizationKind(string value)
        {
            NodeProto? node = Op(value, "Div", "Mul");
            if (node is null || node.Input.Count != 2)
            {
                return null;
            }

            string numerator = node.Input[0];
            string? root = node.OpType == "Div" ? node.Input[1] : Op(node.Input[1], "Reciprocal")?.Input[0];
            if (root is null || Op(root, "Sqrt") is not NodeProto sqrt || Op(sqrt.Input[0], "Add") is not NodeProto addEpsilon || addEpsilon.Input.Count != 2)
            {
                return null;
            }

            int epsilon = IsScalarConstant(addEpsilon.Input[1]) ? 1 : IsScalarConstant(addEpsilon.Input[0]) ? 0 : -1;
            if (epsilon < 0 || Op(addEpsilon.Input[1 - epsilon], "ReduceMean") is not NodeProto variance || !ReducesOneAxis(variance) || !IsSquareOf(variance.Input[0], numerator))
            {
                return null;
            }

            // (x − mean(x)) over the same x for a layer norm; x itself for an RMS norm.
            return Op(numerator, "Sub") is NodeProto sub && sub.Input.Count == 2 && Op(sub.Input[1], "ReduceMean") is NodeProto mean && ReducesOneAxis(mean) && mean.Input[0] == sub.Input[0]
                ? OnnxScaleProducerKind.DecomposedLayerNormalization
                : OnnxScaleProducerKind.DecomposedRmsNormalization;
        }

        /// <summary>Whether a value is Pow(x, 2) or Mul(x, x).</summary>
        private bool IsSquareOf(string value, string x) =>
            Op(value, "Pow", "Mul") is NodeProto node && node.Input.Count == 2 && node.Input[0] == x
            && (node.OpType == "Mul" ? node.Input[1] == x : IsScalarConstant(node.Input[1]) && _editor.ReadConstant(node.Input[1])[0] == 2);

        private bool IsScalarConstant(string name) => _editor.ConstantShape(name) is { } dims && dims.All(d => d == 1);

        /// <summary>Whether a ReduceMean keeps its dimensions and reduces one axis given by its attribute (opset 18 moved the axes to an input, which must then be a one-element constant).</summary>
        private bool ReducesOneAxis(NodeProto node)
        {
            if (node.FindAttribute("keepdims")?.I == 0)
            {
                return false;
            }

            if (node.FindAttribute("axes") is AttributeProto axes)
            {
                return axes.Ints.Count == 1;
            }

            return node.Input.Count == 2 && _editor.Graph.Initializer.FirstOrDefault(t => t.Name == node.Input[1]) is TensorProto tensor && tensor.Dims.Aggregate(1L, (a, b) => a * b) == 1;
        }

        /// <summary>The default-domain producer of a value when it is one of the given operators.</summary>
        private NodeProto? Op(string value, params string[] opTypes) =>
            _producers.TryGetValue(value, out NodeProto? node) && node.IsDefaultDomain() && opTypes.Contains(node.OpType) ? node : null;
    }

    /// <summary>A recognised producer: its kind, the nodes whose constants change and those constants.</summary>
    private sealed record Producer(OnnxScaleProducerKind Kind, IReadOnlyList<NodeProto> Nodes, IReadOnlyList<Constant> Constants);
}
