using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// MatMul/Gemm layers with constant weights that share one input X, the nodes before X that can take 1/s per channel of
/// X's last axis, and the constants they hold; found by <see cref="ChannelScaleFolding.Find"/> on an editor's graph.
/// </summary>
/// <param name="Input">X.</param>
/// <param name="Channels">The size of X's last axis (the layers' input features).</param>
/// <param name="Kind">What produces X (<see cref="OnnxScaleProducerKind.ExplicitScale"/>: nothing before X takes 1/s, a new Mul does).</param>
/// <param name="Producer">The node that writes X, or <see langword="null"/> for a graph input (only with an explicit scale).</param>
/// <param name="ProducerNodes">Every node whose constants change, in graph order, ending with <paramref name="Producer"/>; empty with an explicit scale.</param>
/// <param name="ProducerConstants">The producer's constants that are divided by s.</param>
/// <param name="Consumers">The layers, whose weights' input rows are multiplied by s.</param>
/// <param name="Others">The other nodes that read X.</param>
/// <param name="IsGraphOutput">Whether X is also a graph output.</param>
internal sealed record ChannelScaleGroup(
    string Input,
    int Channels,
    OnnxScaleProducerKind Kind,
    NodeProto? Producer,
    IReadOnlyList<NodeProto> ProducerNodes,
    IReadOnlyList<ChannelScaleGroup.Constant> ProducerConstants,
    IReadOnlyList<NodeProto> Consumers,
    IReadOnlyList<NodeProto> Others,
    bool IsGraphOutput)
{
    /// <summary>Gets a value indicating whether X must be restored for other readers (see <see cref="OnnxOtherConsumerPolicy.Compensate"/>); never with an explicit scale, which feeds only the group's layers.</summary>
    public bool NeedsRestore => Kind != OnnxScaleProducerKind.ExplicitScale && (Others.Count > 0 || IsGraphOutput);

    /// <summary>The constant weight of a consumer: its input rows (MatMul and Gemm [K, N]: axis 0; Gemm with transB [N, K]: axis 1).</summary>
    public static Constant WeightOf(NodeProto consumer) => new(consumer, 1, ChannelsLast: consumer.GemmTransB());

    /// <summary>One constant input of one node, with the channel of each element.</summary>
    /// <param name="Node">The node.</param>
    /// <param name="Input">The input index.</param>
    /// <param name="ChannelsLast">Whether the channel is the last axis (element i belongs to channel i mod C); otherwise the first (channel i / (length / C)).</param>
    internal readonly record struct Constant(NodeProto Node, int Input, bool ChannelsLast);
}
