using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Quantization;

/// <summary>
/// A 4-bit weight [outFeatures, inFeatures] with one scale (and, for UInt4, one zero point) per output channel and group
/// of input features, repacked for the linear kernels: panels of <see cref="PanelRows"/> output channels, and inside a
/// panel, for each step of eight input features, one 32-bit word per channel holding its eight codes.
/// </summary>
/// <remarks>
/// <para>
/// Codes are stored unsigned: <c>u = q + 8</c> for Int4 (so <c>q = u - 8</c>) and <c>u = q</c> for UInt4, and the weight
/// is <c>(u - offset) * scale</c> with offset 8 (Int4) or the zero point (UInt4), which is exactly
/// <c>(q - zeroPoint) * scale</c>, the library's dequantization. In the word of channel c at step s, byte b holds feature
/// <c>8s + b</c> in its low nibble and feature <c>8s + 4 + b</c> in its high nibble: a 32-bit shift by
/// <see cref="NibbleShift"/> brings any of the eight codes to the low four bits (what <c>vpermps</c> reads), and masking
/// all bytes with 0x0F (or shifting by 4 first) gives four consecutive features as bytes, the operand of <c>vpdpbusd</c>.
/// </para>
/// <para>
/// One step of a panel is 128 bytes, a 512-bit vector 16 channels, a 256-bit one 8. Input features are padded to a
/// multiple of eight with codes equal to the offset (weight 0); output channels to a whole panel with zero weights.
/// Groups are whole steps (the group size is a multiple of eight); the last group may be partial.
/// </para>
/// </remarks>
internal sealed class PackedInt4Weight
{
    /// <summary>Output channels per panel.</summary>
    public const int PanelRows = 32;

    /// <summary>Input features per step (one 32-bit word per channel).</summary>
    public const int StepFeatures = 8;

    /// <summary>Bytes per step of one panel.</summary>
    public const int StepBytes = PanelRows * sizeof(uint);

    private const int Alignment = 64;

    private readonly byte[] _data;
    private readonly int _offset;

    /// <summary>Initializes a new instance of the <see cref="PackedInt4Weight"/> class.</summary>
    /// <param name="codes">The unsigned codes <c>u</c>, row-major [outFeatures, inFeatures], each in [0, 15].</param>
    /// <param name="outFeatures">The output channels.</param>
    /// <param name="inFeatures">The input features.</param>
    /// <param name="groupSize">The input features per group, a multiple of <see cref="StepFeatures"/> (or at least <paramref name="inFeatures"/>).</param>
    /// <param name="scales">The scales, row-major [outFeatures, groups].</param>
    /// <param name="offsets">The offsets (8 for Int4, the zero points for UInt4), row-major [outFeatures, groups], each in [0, 15].</param>
    public unsafe PackedInt4Weight(ReadOnlySpan<byte> codes, int outFeatures, int inFeatures, int groupSize, ReadOnlySpan<float> scales, ReadOnlySpan<int> offsets)
    {
        Debug.Assert(codes.Length == outFeatures * inFeatures, "One code per weight.");
        Debug.Assert(groupSize % StepFeatures == 0 || groupSize >= inFeatures, "Groups are whole steps.");
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        Steps = (inFeatures + StepFeatures - 1) / StepFeatures;
        Panels = (outFeatures + PanelRows - 1) / PanelRows;
        GroupSteps = groupSize >= inFeatures ? Steps : groupSize / StepFeatures;
        Groups = (Steps + GroupSteps - 1) / GroupSteps;
        Debug.Assert(scales.Length == outFeatures * Groups && offsets.Length == outFeatures * Groups, "One scale and offset per channel and group.");
        _data = GC.AllocateArray<byte>(checked((Panels * PanelBytes) + Alignment - 1), pinned: true);
        _offset = (int)((Alignment - ((nuint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_data)) % Alignment)) % Alignment);
        Scales = new float[Panels * Groups * PanelRows];
        Offsets = new int[Panels * Groups * PanelRows];
        for (int n = 0; n < outFeatures; n++)
        {
            ReadOnlySpan<byte> row = codes.Slice(n * inFeatures, inFeatures);
            Span<uint> words = MemoryMarshal.Cast<byte, uint>(_data.AsSpan(_offset + ((n / PanelRows) * PanelBytes), PanelBytes));
            int channel = n % PanelRows;
            for (int g = 0; g < Groups; g++)
            {
                int parameter = ParameterIndex(n, g);
                Scales[parameter] = scales[(n * Groups) + g];
                Offsets[parameter] = offsets[(n * Groups) + g];
            }

            for (int k = 0; k < Steps * StepFeatures; k++)
            {
                uint code = k < inFeatures ? row[k] : (uint)offsets[(n * Groups) + (k / StepFeatures / GroupSteps)];
                Debug.Assert(code < 16, "A 4-bit code.");
                words[((k / StepFeatures) * PanelRows) + channel] |= code << NibbleShift(k % StepFeatures);
            }
        }

        // Padding channels keep codes 0, offset 0 and scale 0: a zero weight on every path.
    }

    /// <summary>Gets the output channels.</summary>
    public int OutFeatures { get; }

    /// <summary>Gets the input features.</summary>
    public int InFeatures { get; }

    /// <summary>Gets the steps of eight input features.</summary>
    public int Steps { get; }

    /// <summary>Gets the input length the kernels read per token: the input features padded to a multiple of eight.</summary>
    public int PaddedInFeatures => Steps * StepFeatures;

    /// <summary>Gets the steps per group (the last group may have fewer).</summary>
    public int GroupSteps { get; }

    /// <summary>Gets the groups along the input features.</summary>
    public int Groups { get; }

    /// <summary>Gets the number of panels.</summary>
    public int Panels { get; }

    /// <summary>Gets the bytes of one panel.</summary>
    public int PanelBytes => Steps * StepBytes;

    /// <summary>Gets the scales, [panel][group][channel % 32] (0 for padding channels).</summary>
    public float[] Scales { get; }

    /// <summary>Gets the code offsets (8 for Int4, the zero points for UInt4), laid out as <see cref="Scales"/>.</summary>
    public int[] Offsets { get; }

    /// <summary>Gets the shift that brings feature <paramref name="feature"/> (0-7) of a step to the low four bits of its word.</summary>
    /// <param name="feature">The feature within the step.</param>
    /// <returns>8 x feature for features 0-3, 8 x (feature - 4) + 4 for features 4-7.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NibbleShift(int feature) => ((feature & 3) * 8) + ((feature >> 2) * 4);

    /// <summary>Gets the index of a channel's parameters for a group in <see cref="Scales"/> and <see cref="Offsets"/>.</summary>
    /// <param name="channel">The output channel.</param>
    /// <param name="group">The group.</param>
    /// <returns>The index.</returns>
    public int ParameterIndex(int channel, int group) => ((((channel / PanelRows) * Groups) + group) * PanelRows) + (channel % PanelRows);

    /// <summary>Gets the first step of a group.</summary>
    /// <param name="group">The group.</param>
    /// <returns>The step index.</returns>
    public int GroupStart(int group) => group * GroupSteps;

    /// <summary>Gets the steps of a group (the last one may be partial).</summary>
    /// <param name="group">The group.</param>
    /// <returns>The step count.</returns>
    public int GroupLength(int group) => Math.Min(GroupSteps, Steps - (group * GroupSteps));

    /// <summary>Gets the first word of a panel.</summary>
    /// <param name="panel">The panel index.</param>
    /// <returns>A reference to the panel's first word.</returns>
    public ref uint GetPanel(int panel) => ref Unsafe.As<byte, uint>(ref _data[_offset + (panel * PanelBytes)]);
}
