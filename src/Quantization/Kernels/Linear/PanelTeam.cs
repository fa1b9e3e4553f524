using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace Quantization;

/// <summary>
/// The threads that share one <see cref="QuantizedLinear.Forward"/> call's panels with the calling thread: one process-wide
/// team of background helper threads, held by one call at a time.
/// </summary>
/// <remarks>
/// <para>
/// A decode step is a few hundred GEMV calls of 20-500 microseconds each, back to back, so what a call costs to start
/// matters as much as how its work is split. Waking a sleeping thread takes tens of microseconds (much more on a loaded
/// machine), and <see cref="Parallel.For(int, int, Action{int})"/> allocates and goes through the thread pool on every
/// call. A helper here therefore keeps polling for the next call for <see cref="SpinTime"/> after each one (the next
/// linear of a decode step starts well within it) and only then blocks; a call allocates nothing.
/// </para>
/// <para>
/// A call's panels are cut into units (a few panels each) and the units into one contiguous segment per participant, so
/// each thread streams its own part of the weight front to back. A participant that finishes its segment takes units
/// from the back of the others', so a helper that starts late (or is preempted) costs at most a unit: the calling thread
/// never waits for a segment nobody works on. Every panel is computed by the same code whichever thread takes it, so
/// the results have the same bits as one thread.
/// </para>
/// </remarks>
internal sealed class PanelTeam
{
    /// <summary>How long a helper keeps polling for the next call before it blocks.</summary>
    private static readonly long SpinTime = Stopwatch.Frequency / 5000; // 200 microseconds

    /// <summary>Claim slots are this many longs apart, so that two participants' slots never share a cache line.</summary>
    private const int SlotStride = 16;

    private static readonly PanelTeam Shared = new();
    private static int s_helperLimit = Math.Max(Environment.ProcessorCount - 1, 1);

    private readonly List<Helper> _helpers = [];
    private int _busy;

    // The current call, written by the calling thread before it publishes the call's generation.
    private long[] _segments = new long[SlotStride];
    private QuantizedLinear.PanelWork _work;
    private unsafe float* _output;
    private int _length;
    private int _panels;
    private int _unitPanels;
    private int _participants;
    private int _units;
    private int _completed;
    private int _inside;
    private int _open = -1;
    private int _generation;
    private ExceptionDispatchInfo? _failure;

    /// <summary>
    /// Gets or sets the most helper threads the team starts: by default one less than the processors, since a helper that
    /// polls while another thread needs its processor slows both. Tests raise it to cover more participants.
    /// </summary>
    internal static int HelperLimit
    {
        get => Volatile.Read(ref s_helperLimit);
        set => Volatile.Write(ref s_helperLimit, Math.Max(value, 1));
    }

    /// <summary>
    /// Runs a call's panels on up to <paramref name="degree"/> threads (this one included), or returns
    /// <see langword="false"/> without running anything when another call holds the team.
    /// </summary>
    /// <param name="work">The call's prepared inputs.</param>
    /// <param name="output">The call's output, pinned by the caller for the duration of the call.</param>
    /// <param name="length">The output's length.</param>
    /// <param name="panels">The panels.</param>
    /// <param name="unitPanels">The panels of a unit of work: contiguous panels one thread computes in one go.</param>
    /// <param name="degree">The most threads, at least 2.</param>
    /// <returns>Whether the call ran.</returns>
    public static unsafe bool TryRun(in QuantizedLinear.PanelWork work, float* output, int length, int panels, int unitPanels, int degree)
    {
        Debug.Assert(degree >= 2 && unitPanels >= 1 && panels >= 1, "A parallel call.");
        PanelTeam team = Shared;
        if (Interlocked.CompareExchange(ref team._busy, 1, 0) != 0)
        {
            return false;
        }

        try
        {
            team.Run(work, output, length, panels, unitPanels, degree);
        }
        finally
        {
            Volatile.Write(ref team._busy, 0);
        }

        return true;
    }

    private unsafe void Run(in QuantizedLinear.PanelWork work, float* output, int length, int panels, int unitPanels, int degree)
    {
        int units = (panels + unitPanels - 1) / unitPanels;
        int participants = Math.Min(Math.Min(degree, HelperLimit + 1), units);
        while (_helpers.Count < participants - 1)
        {
            _helpers.Add(new Helper(this, _helpers.Count));
        }

        if (_segments.Length < participants * SlotStride)
        {
            _segments = new long[participants * SlotStride];
        }

        _work = work;
        _output = output;
        _length = length;
        _panels = panels;
        _unitPanels = unitPanels;
        _participants = participants;
        _units = units;
        _completed = 0;
        _failure = null;
        for (int i = 0; i < participants; i++)
        {
            _segments[i * SlotStride] = Pack(units * i / participants, units * (i + 1) / participants);
        }

        int generation = unchecked(_generation + 2); // even, so never the closed mark -1
        Volatile.Write(ref _open, generation);
        Volatile.Write(ref _generation, generation);
        for (int i = 0; i < participants - 1; i++)
        {
            _helpers[i].Wake();
        }

        Participate(0);
        SpinWait wait = default;
        while (Volatile.Read(ref _completed) < units)
        {
            wait.SpinOnce(sleep1Threshold: -1);
        }

        // Close the call, then let any helper that joined it late see that and leave before the fields change again.
        Interlocked.Exchange(ref _open, -1);
        wait = default;
        while (Volatile.Read(ref _inside) != 0)
        {
            wait.SpinOnce(sleep1Threshold: -1);
        }

        _work = default;
        _failure?.Throw();
    }

    /// <summary>Takes units from the front of this participant's segment, then from the back of the others'.</summary>
    private unsafe void Participate(int participant)
    {
        for (int i = 0; i < _participants; i++)
        {
            int segment = (participant + i) % _participants;
            while (TryClaim(segment, fromFront: i == 0, out int unit))
            {
                try
                {
                    int first = unit * _unitPanels;
                    _work.Run(first, Math.Min(first + _unitPanels, _panels), new Span<float>(_output, _length));
                }
                catch (Exception exception)
                {
                    // The call's exception, thrown by the calling thread once every unit is done (helpers may still be in theirs).
                    _failure ??= ExceptionDispatchInfo.Capture(exception);
                }
                finally
                {
                    Interlocked.Increment(ref _completed);
                }
            }
        }
    }

    /// <summary>Claims a unit of a segment, [front, back) packed in one long: its first or its last unit.</summary>
    private bool TryClaim(int segment, bool fromFront, out int unit)
    {
        ref long slot = ref _segments[segment * SlotStride];
        while (true)
        {
            long current = Volatile.Read(ref slot);
            int front = (int)current, back = (int)(current >> 32);
            if (front >= back)
            {
                unit = -1;
                return false;
            }

            unit = fromFront ? front : back - 1;
            long next = fromFront ? Pack(front + 1, back) : Pack(front, back - 1);
            if (Interlocked.CompareExchange(ref slot, next, current) == current)
            {
                return true;
            }
        }
    }

    private static long Pack(int front, int back) => (uint)front | ((long)back << 32);

    /// <summary>A helper's part of a call it has seen published: joins it if the call is still open and includes it.</summary>
    private void Join(int helper, int generation)
    {
        Interlocked.Increment(ref _inside);
        if (Volatile.Read(ref _open) == generation && helper + 1 < _participants)
        {
            Participate(helper + 1);
        }

        Interlocked.Decrement(ref _inside);
    }

    /// <summary>One helper thread: polls for a new call, joins it, and blocks after <see cref="SpinTime"/> without one.</summary>
    private sealed class Helper
    {
        private readonly PanelTeam _team;
        private readonly int _index;
        private readonly object _gate = new();
        private bool _signaled;
        private int _sleeping;

        public Helper(PanelTeam team, int index)
        {
            _team = team;
            _index = index;
            Thread thread = new(Loop) { IsBackground = true, Name = FormattableString.Invariant($"QuantizedLinear helper {index + 1}") };
            thread.Start();
        }

        /// <summary>Wakes the helper if it blocked; a polling helper sees the new call by itself.</summary>
        public void Wake()
        {
            if (Interlocked.Exchange(ref _sleeping, 0) == 1)
            {
                lock (_gate)
                {
                    _signaled = true;
                    Monitor.Pulse(_gate);
                }
            }
        }

        /// <summary>Blocks until <see cref="Wake"/> signals, and consumes the signal.</summary>
        private void Block()
        {
            lock (_gate)
            {
                while (!_signaled)
                {
                    Monitor.Wait(_gate);
                }

                _signaled = false;
            }
        }

        private void Loop()
        {
            int seen = Volatile.Read(ref _team._generation);
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                SpinWait poll = default;
                while (Volatile.Read(ref _team._generation) == seen)
                {
                    if (Stopwatch.GetTimestamp() - start < SpinTime)
                    {
                        // Spins, then yields between looks: on a busy machine the processor goes to whoever waits for it.
                        poll.SpinOnce(sleep1Threshold: -1);
                        continue;
                    }

                    // Announce the sleep, then look once more: a call published in between either is seen here or wakes us.
                    Interlocked.Exchange(ref _sleeping, 1);
                    if (Volatile.Read(ref _team._generation) != seen && Interlocked.Exchange(ref _sleeping, 0) == 1)
                    {
                        break;
                    }

                    Block();
                    start = Stopwatch.GetTimestamp();
                }

                int generation = Volatile.Read(ref _team._generation);
                seen = generation;
                _team.Join(_index, generation);
            }
        }
    }
}
