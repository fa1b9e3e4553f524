namespace Quantization.Tests.Kernels;

/// <summary>
/// The run-time assembled AVX-512 VNNI kernel: its bytes against GNU as (on any machine), and its sums against the scalar
/// specification for every tile size and step count (where the CPU runs it; <see cref="LinearKernelTests"/> covers it as
/// one of the paths too).
/// </summary>
public class Avx512VnniKernelTests
{
    /// <summary>Every kernel the library builds: 1 to 8 tokens on one panel, 1 to 4 on two.</summary>
    public static TheoryData<int, int> EveryKernel
    {
        get
        {
            TheoryData<int, int> kernels = new();
            for (int panels = 1; panels <= 2; panels++)
            {
                for (int tokens = 1; tokens <= (panels == 1 ? Avx512VnniKernel.MaxTokens : Avx512VnniKernel.MaxPairedTokens); tokens++)
                {
                    kernels.Add(tokens, panels);
                }
            }

            return kernels;
        }
    }

    [Theory]
    [MemberData(nameof(EveryKernel))]
    public void Assemble_GivesTheBytesOfGnuAs(int tokens, int panels)
    {
        // Kernels/Data/make-avx512-vnni-kernels.py writes each kernel's source and assembles it with GNU as.
        string golden = $"avx512-vnni-kernel-{tokens}-{(tokens == 1 ? "token" : "tokens")}{(panels == 1 ? "" : $"-{panels}-panels")}.hex";
        string hex = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Kernels", "Data", golden)).Trim();
        Assert.Equal(hex, Convert.ToHexStringLower(Avx512VnniKernel.Assemble(tokens, panels)));
    }

    [Avx512VnniTheory]
    [InlineData(1)]
    [InlineData(2)]
    public unsafe void Accumulate_EveryTileAndStepCount_EqualsScalarDotsAndAddsToTheSums(int panels)
    {
        Random random = new(11 * panels);
        foreach (int inFeatures in new[] { 4, 8, 12, 40, 516 })
        {
            // Three panels: the pair is the first and the last, 2 panels apart.
            int outFeatures = 3 * PackedInt8Weight.PanelRows;
            sbyte[] weight = RandomBytes(random, outFeatures * inFeatures);
            weight[0] = sbyte.MinValue;
            weight[1] = sbyte.MaxValue;
            PackedInt8Weight packed = new(weight, outFeatures, inFeatures);
            int[] panelIndices = panels == 1 ? [0] : [0, 2];
            for (int tokens = 1; tokens <= (panels == 1 ? Avx512VnniKernel.MaxTokens : Avx512VnniKernel.MaxPairedTokens); tokens++)
            {
                sbyte[] x = RandomBytes(random, tokens * inFeatures);
                x[0] = sbyte.MinValue;
                byte[] prepared = new byte[x.Length];
                Int8PanelKernel.PrepareActivations(Int8KernelPath.Avx512Vnni, x, prepared);
                int[] sums = Enumerable.Range(0, panels * tokens * PackedInt8Weight.PanelRows).ToArray();
                fixed (sbyte* first = &packed.GetPanel(0))
                fixed (sbyte* last = &packed.GetPanel(2))
                fixed (byte* a = prepared)
                fixed (int* s = sums)
                {
                    Avx512VnniKernel.Accumulate(first, panels == 1 ? 0 : (nint)(last - first), a, inFeatures, packed.Steps, tokens, s);
                }

                for (int j = 0; j < panels; j++)
                {
                    for (int t = 0; t < tokens; t++)
                    {
                        for (int c = 0; c < PackedInt8Weight.PanelRows; c++)
                        {
                            // The kernel sums (x + 128) * w on top of what the sums held.
                            int n = (panelIndices[j] * PackedInt8Weight.PanelRows) + c;
                            int i = (((j * tokens) + t) * PackedInt8Weight.PanelRows) + c;
                            int expected = i + TestUtilities.ScalarReference.DotInt8(x.AsSpan(t * inFeatures, inFeatures), weight.AsSpan(n * inFeatures, inFeatures)) + packed.ActivationOffsets[n];
                            Assert.True(expected == sums[i], $"{inFeatures} features, {panels} panels, {tokens} tokens: token {t}, channel {n} summed {sums[i]}, expected {expected}");
                        }
                    }
                }
            }
        }
    }

    private static sbyte[] RandomBytes(Random random, int length)
    {
        sbyte[] values = new sbyte[length];
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    [Avx512VnniTheory]
    [InlineData(0, 1)]
    [InlineData(1, 0)]
    [InlineData(1, Avx512VnniKernel.MaxTokens + 1)]
    public unsafe void Accumulate_NoStepOrTooManyTokens_IsRefusedBeforeNativeCodeRuns(int steps, int tokens)
    {
        sbyte* weights = stackalloc sbyte[PackedInt8Weight.StepBytes];
        byte* activations = stackalloc byte[PackedInt8Weight.StepFeatures * (Avx512VnniKernel.MaxTokens + 1)];
        int* sums = stackalloc int[PackedInt8Weight.PanelRows * (Avx512VnniKernel.MaxTokens + 1)];
        nint w = (nint)weights, a = (nint)activations, s = (nint)sums;
        Assert.Throws<ArgumentOutOfRangeException>(() => Avx512VnniKernel.Accumulate((sbyte*)w, 0, (byte*)a, PackedInt8Weight.StepFeatures, steps, tokens, (int*)s));
    }

    [Avx512VnniTheory]
    [InlineData(1)]
    [InlineData(4)]
    public void AccumulatePair_ActivationsShorterThanTheTokens_IsRefusedBeforeNativeCodeRuns(int tokens)
    {
        PackedInt8Weight packed = new(new sbyte[2 * PackedInt8Weight.PanelRows * 8], 2 * PackedInt8Weight.PanelRows, 8);
        byte[] activations = new byte[(tokens * packed.PaddedInFeatures) - 1];
        int[] sums = new int[2 * tokens * PackedInt8Weight.PanelRows];
        Assert.Throws<ArgumentException>(() => Int8PanelKernel.AccumulatePair(packed, 0, 1, activations, tokens, sums));
    }

    [Fact]
    public void AccumulatePair_SecondPanelOutsideTheWeight_IsRefusedBeforeNativeCodeRuns()
    {
        PackedInt8Weight packed = new(new sbyte[2 * PackedInt8Weight.PanelRows * 8], 2 * PackedInt8Weight.PanelRows, 8);
        byte[] activations = new byte[packed.PaddedInFeatures];
        int[] sums = new int[2 * PackedInt8Weight.PanelRows];
        Assert.Equal("other", Assert.Throws<ArgumentOutOfRangeException>(() => Int8PanelKernel.AccumulatePair(packed, 0, packed.Panels, activations, 1, sums)).ParamName);
        Assert.Equal("panel", Assert.Throws<ArgumentOutOfRangeException>(() => Int8PanelKernel.AccumulatePair(packed, -1, 1, activations, 1, sums)).ParamName);
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(2, 64)]
    [InlineData(2, 0 - PackedInt8Weight.StepBytes)]
    public unsafe void Accumulate_ShortStrideOrSecondPanelOffTheStepGrid_IsRefusedBeforeNativeCodeRuns(int panels, int secondPanel)
    {
        // Two steps: a token's activations are 8 bytes apart at least, and a second panel lies whole panels (256 bytes) away.
        const int Steps = 2;
        sbyte* weights = stackalloc sbyte[3 * Steps * PackedInt8Weight.StepBytes];
        byte* activations = stackalloc byte[2 * Steps * PackedInt8Weight.StepFeatures];
        int* sums = stackalloc int[2 * 2 * PackedInt8Weight.PanelRows];
        nint w = (nint)weights, a = (nint)activations, s = (nint)sums;
        int stride = panels == 1 ? (Steps * PackedInt8Weight.StepFeatures) - 1 : Steps * PackedInt8Weight.StepFeatures;
        nint offset = panels == 1 ? 0 : secondPanel;
        Assert.ThrowsAny<ArgumentException>(() => Avx512VnniKernel.Accumulate((sbyte*)w, offset, (byte*)a, stride, Steps, 2, (int*)s));
    }

    /// <summary>A theory that runs where the AVX-512 VNNI kernels do, and is reported as skipped elsewhere.</summary>
    private sealed class Avx512VnniTheoryAttribute : TheoryAttribute
    {
        public Avx512VnniTheoryAttribute()
        {
            if (!Avx512VnniKernel.IsSupported)
            {
                Skip = "The AVX-512 VNNI kernels do not run on this machine or process.";
            }
        }
    }
}
