using System.Buffers;

using Quantization.Onnx.Protos;

using static System.FormattableString;

namespace Quantization.Onnx;

/// <summary>
/// The im2col view of a 1-D or 2-D Conv: every output position of every image reads one patch of its group's input
/// channels, and the Conv is, per group, a linear layer from those patches to the group's output channels. The patch
/// features are ordered (kernel row, kernel column, channel), so the weight's blocks along its input-channel axis at a
/// fixed kernel position (the blocks DequantizeLinear of opset 21 expresses for Conv) are contiguous runs of features.
/// </summary>
/// <remarks>
/// When a group's channels are more than a block and not a multiple of it, each kernel position's channels are padded with
/// zero features up to a whole number of blocks, so that every block is one contiguous group for GPTQ; a padded feature is
/// always zero, a dead input that gets a zero weight. With blocks of at least the group's channels, a block is the whole
/// kernel position (no padding).
/// </remarks>
internal sealed class ConvPatches
{
    /// <summary>The feature values unfolded per chunk of patches: bounded memory however large the batch.</summary>
    private const int ChunkValues = 1 << 18;

    /// <summary>The rows <see cref="HessianAccumulator"/> takes at a time; chunks are a multiple of it.</summary>
    private const int AccumulatorRows = 64;

    private readonly int[] _kernel = new int[2], _strides = new int[2], _dilations = new int[2], _pads = new int[4];
    private readonly string _autoPad;
    private readonly int _spatialRank;

    private ConvPatches(int outputs, int groups, int groupChannels, int blockSize, int spatialRank, string autoPad)
    {
        Outputs = outputs;
        Groups = groups;
        GroupChannels = groupChannels;
        _spatialRank = spatialRank;
        _autoPad = autoPad;
        (BlockSize, PaddedChannels) = blockSize <= 0 ? (0, groupChannels)
            : blockSize >= groupChannels ? (groupChannels, groupChannels)
            : (blockSize, (groupChannels + blockSize - 1) / blockSize * blockSize);
    }

    /// <summary>Gets the number of output channels (the weight's axis 0).</summary>
    public int Outputs { get; }

    /// <summary>Gets the Conv's group count.</summary>
    public int Groups { get; }

    /// <summary>Gets the input channels per group (the weight's axis 1).</summary>
    public int GroupChannels { get; }

    /// <summary>Gets the channels per kernel position in a patch: <see cref="GroupChannels"/>, padded to whole blocks if needed.</summary>
    public int PaddedChannels { get; }

    /// <summary>Gets the size of a block of features in a patch (a contiguous GPTQ group), or 0 when the weight is not blocked.</summary>
    public int BlockSize { get; }

    /// <summary>Gets the number of kernel positions (kernel height × width).</summary>
    public int KernelPositions => _kernel[0] * _kernel[1];

    /// <summary>Gets the number of features in a patch: <see cref="KernelPositions"/> × <see cref="PaddedChannels"/>.</summary>
    public int Features => KernelPositions * PaddedChannels;

    /// <summary>
    /// The unfolding of a Conv node with a weight of the given shape, or <see langword="null"/> with the reason when it has
    /// none: only 1-D and 2-D convolutions (weights of rank 3 and 4) are unfolded.
    /// </summary>
    /// <param name="node">The Conv node.</param>
    /// <param name="weightShape">Its weight's shape [M, C / group, kernel...].</param>
    /// <param name="blockSize">The block size along the weight's input-channel axis, or 0 when the weight is not blocked.</param>
    /// <param name="reason">Why the node is not unfolded.</param>
    public static ConvPatches? Create(NodeProto node, IReadOnlyList<long> weightShape, int blockSize, out string? reason)
    {
        int spatialRank = weightShape.Count - 2;
        long groups = node.FindAttribute("group")?.I ?? 1;
        reason = spatialRank is not (1 or 2) ? Invariant($"{spatialRank}-D convolutions are not unfolded")
            : groups <= 0 || weightShape[0] % groups != 0 ? Invariant($"the group count {groups} does not divide the {weightShape[0]} output channels")
            : null;
        if (reason is not null)
        {
            return null;
        }

        string autoPad = node.FindAttribute("auto_pad")?.S.ToStringUtf8() is { Length: > 0 } pad ? pad : "NOTSET";
        ConvPatches patches = new(checked((int)weightShape[0]), (int)groups, checked((int)weightShape[1]), blockSize, spatialRank, autoPad);
        long[] strides = [.. node.FindAttribute("strides")?.Ints ?? []];
        long[] dilations = [.. node.FindAttribute("dilations")?.Ints ?? []];
        long[] pads = [.. node.FindAttribute("pads")?.Ints ?? []];
        for (int d = 0; d < 2; d++)
        {
            // A 1-D Conv is a 2-D one of height 1: its axis is the width.
            int a = d - (2 - spatialRank);
            bool real = a >= 0;
            patches._kernel[d] = real ? checked((int)weightShape[2 + a]) : 1;
            patches._strides[d] = real && strides.Length == spatialRank ? checked((int)strides[a]) : 1;
            patches._dilations[d] = real && dilations.Length == spatialRank ? checked((int)dilations[a]) : 1;
            patches._pads[d] = real && pads.Length == 2 * spatialRank ? checked((int)pads[a]) : 0;
            patches._pads[2 + d] = real && pads.Length == 2 * spatialRank ? checked((int)pads[spatialRank + a]) : 0;
        }

        if (patches._strides.Any(s => s <= 0) || patches._dilations.Any(s => s <= 0) || patches._pads.Any(p => p < 0))
        {
            reason = "its strides, dilations or pads are not valid";
            return null;
        }

        return patches;
    }

    /// <summary>
    /// Unfolds a batch of the Conv's input, [N, C, H, W] (or [N, C, L]), into patches and adds them, one group at a time,
    /// to that group's Hessian, a chunk of patches at a time.
    /// </summary>
    /// <param name="input">The input, row-major.</param>
    /// <param name="shape">Its shape.</param>
    /// <param name="hessians">One accumulator of <see cref="Features"/> per group.</param>
    /// <param name="name">The input's name, for messages.</param>
    /// <exception cref="ArgumentException">The shape is not the Conv's input shape, or does not fit the data.</exception>
    public void Accumulate(ReadOnlySpan<float> input, ReadOnlySpan<int> shape, HessianAccumulator[] hessians, string name)
    {
        if (shape.Length != 2 + _spatialRank || shape[1] != Groups * GroupChannels)
        {
            throw new ArgumentException(Invariant($"Conv input '{name}' has shape [{string.Join(", ", shape.ToArray())}]; a {_spatialRank}-D Conv with {Groups * GroupChannels} input channels needs [N, {Groups * GroupChannels}, ...]."), nameof(shape));
        }

        int batch = shape[0], channels = shape[1];
        (int height, int width) = _spatialRank == 2 ? (shape[2], shape[3]) : (1, shape[2]);
        if ((long)batch * channels * height * width != input.Length)
        {
            throw new ArgumentException(Invariant($"Conv input '{name}' has shape [{string.Join(", ", shape.ToArray())}] but {input.Length} values."), nameof(input));
        }

        (int outHeight, int padTop) = OutputSize(height, 0);
        (int outWidth, int padLeft) = OutputSize(width, 1);
        int positions = outHeight * outWidth, features = Features;
        int chunkRows = AccumulatorRows * Math.Max(1, ChunkValues / (AccumulatorRows * features));
        float[] chunk = ArrayPool<float>.Shared.Rent(chunkRows * features);
        try
        {
            for (int group = 0; group < Groups; group++)
            {
                int rows = 0;
                for (int image = 0; image < batch; image++)
                {
                    ReadOnlySpan<float> channelsOfGroup = input.Slice(((image * channels) + (group * GroupChannels)) * height * width, GroupChannels * height * width);
                    for (int position = 0; position < positions; position++)
                    {
                        Unfold(channelsOfGroup, height, width, ((position / outWidth) * _strides[0]) - padTop, ((position % outWidth) * _strides[1]) - padLeft, chunk.AsSpan(rows * features, features));
                        if (++rows == chunkRows)
                        {
                            hessians[group].Add(chunk.AsSpan(0, rows * features), [rows, features], name);
                            rows = 0;
                        }
                    }
                }

                if (rows > 0)
                {
                    hessians[group].Add(chunk.AsSpan(0, rows * features), [rows, features], name);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(chunk);
        }
    }

    /// <summary>Permutes a weight [M, C / group, kh, kw] into rows [M, <see cref="Features"/>] in patch order, padded channels zero.</summary>
    public float[] ToRows(ReadOnlySpan<float> weight)
    {
        float[] rows = new float[Outputs * Features];
        for (int w = 0; w < weight.Length; w++)
        {
            rows[RowIndex(w)] = weight[w];
        }

        return rows;
    }

    /// <summary>Permutes rows [M, <see cref="Features"/>] in patch order back into the weight's layout [M, C / group, kh, kw], dropping padded channels.</summary>
    public float[] FromRows(ReadOnlySpan<float> rows)
    {
        float[] weight = new float[Outputs * GroupChannels * KernelPositions];
        for (int w = 0; w < weight.Length; w++)
        {
            weight[w] = rows[RowIndex(w)];
        }

        return weight;
    }

    /// <summary>The output size along a spatial axis and the padding before it, with ONNX's auto_pad rules.</summary>
    private (int Size, int PadBefore) OutputSize(int input, int axis)
    {
        int reach = ((_kernel[axis] - 1) * _dilations[axis]) + 1;
        int stride = _strides[axis];
        switch (_autoPad)
        {
            case "SAME_UPPER" or "SAME_LOWER":
                int size = (input + stride - 1) / stride;
                int total = Math.Max(0, ((size - 1) * stride) + reach - input);
                return (size, _autoPad == "SAME_UPPER" ? total / 2 : total - (total / 2));
            case "VALID":
                return (Math.Max(0, ((input - reach) / stride) + 1), 0);
            default:
                int padded = input + _pads[axis] + _pads[2 + axis];
                return (padded < reach ? 0 : ((padded - reach) / stride) + 1, _pads[axis]);
        }
    }

    /// <summary>Writes one patch: for every kernel position (i, j) the group's channels at (top + i·dh, left + j·dw), zero outside the input and in padded channels.</summary>
    private void Unfold(ReadOnlySpan<float> channels, int height, int width, int top, int left, Span<float> patch)
    {
        patch.Clear();
        int plane = height * width;
        for (int i = 0; i < _kernel[0]; i++)
        {
            int y = top + (i * _dilations[0]);
            if ((uint)y >= (uint)height)
            {
                continue;
            }

            for (int j = 0; j < _kernel[1]; j++)
            {
                int x = left + (j * _dilations[1]);
                if ((uint)x >= (uint)width)
                {
                    continue;
                }

                Span<float> position = patch.Slice(((i * _kernel[1]) + j) * PaddedChannels, GroupChannels);
                int offset = (y * width) + x;
                for (int c = 0; c < position.Length; c++)
                {
                    position[c] = channels[(c * plane) + offset];
                }
            }
        }
    }

    /// <summary>Where the weight's element w (output m, channel c, kernel position p) sits in the rows: row m, feature p · padded channels + c.</summary>
    private int RowIndex(int w)
    {
        int kernel = KernelPositions;
        int p = w % kernel, channel = w / kernel;
        return ((channel / GroupChannels) * Features) + (p * PaddedChannels) + (channel % GroupChannels);
    }
}
